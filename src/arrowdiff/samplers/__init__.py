"""Samplers: plain functions over a denoiser callable."""

from arrowdiff.samplers.masked import SAMPLERS, sample_ancestral, sample_blocks, sample_confidence

__all__ = ["SAMPLERS", "sample_ancestral", "sample_blocks", "sample_confidence"]
