"""Projection heads, one per modality (R4.7)."""

from arrowdiff.network.heads.audio import AudioHead
from arrowdiff.network.heads.base import (
    HEAD_BUILDERS,
    HEAD_PARAM_LIMIT,
    Head,
    get_head_builder,
    register_head,
)
from arrowdiff.network.heads.image import ImageHead
from arrowdiff.network.heads.text import TokenHead

__all__ = [
    "AudioHead",
    "HEAD_BUILDERS",
    "HEAD_PARAM_LIMIT",
    "Head",
    "ImageHead",
    "TokenHead",
    "get_head_builder",
    "register_head",
]
