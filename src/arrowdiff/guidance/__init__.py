"""Guidance wraps a denoiser and returns a denoiser; samplers never see guidance flags."""

from arrowdiff.guidance.cfg import classifier_free, prompt_dropped

__all__ = ["classifier_free", "prompt_dropped"]
