"""The projection-head interface and registry (R4.5, R4.7).

A head owns the modality's edges: ``embed(x) -> (B, T, D)`` turns its data into backbone tokens and
``project(h) -> prediction`` turns backbone states back into its data space. Adding a modality means
registering a new head (< 10M parameters), never changing the backbone.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from arrowdiff.errors import ModalityError

HEAD_PARAM_LIMIT = 10_000_000  # R4.5


class Head(nn.Module):
    """Base class: subclasses implement embed() and project()."""

    modality: str = ""

    def embed(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def project(self, h: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


HEAD_BUILDERS: dict[str, Callable[..., Head]] = {}


def register_head(modality: str) -> Callable[[Callable[..., Head]], Callable[..., Head]]:
    """Decorator: make a head builder available under a modality name."""

    def deco(builder: Callable[..., Head]) -> Callable[..., Head]:
        HEAD_BUILDERS[modality] = builder
        return builder

    return deco


def get_head_builder(modality: str) -> Callable[..., Head]:
    if modality not in HEAD_BUILDERS:
        raise ModalityError(f"no head registered for modality {modality!r}: known {sorted(HEAD_BUILDERS)}")
    return HEAD_BUILDERS[modality]
