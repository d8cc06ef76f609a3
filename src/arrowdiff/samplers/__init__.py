"""Samplers: plain functions over a denoiser callable."""

from arrowdiff.samplers.continuous import CONTINUOUS_SAMPLERS, initial_noise, sample_euler, sample_stochastic
from arrowdiff.samplers.masked import SAMPLERS, sample_ancestral, sample_blocks, sample_confidence

__all__ = [
    "CONTINUOUS_SAMPLERS",
    "initial_noise",
    "sample_euler",
    "sample_stochastic",
    "SAMPLERS",
    "sample_ancestral",
    "sample_blocks",
    "sample_confidence",
]
