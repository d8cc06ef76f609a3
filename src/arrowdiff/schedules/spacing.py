"""Inference timestep spacing (R11.5): the times a sampler visits, from t=1 (pure noise) down to 0."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from arrowdiff.errors import ConfigError

SPACINGS = ("uniform", "quadratic", "cosine")


def timesteps(num_steps: int, spacing: str = "uniform", t_max: float = 1.0, t_min: float = 0.0) -> Tensor:
    """Return ``num_steps + 1`` decreasing times from t_max to t_min (float64).

    uniform: equal gaps. quadratic: gaps shrink towards t_min (finer steps near clean data, DDIM's
    "quadratic" spacing). cosine: gaps shrink at both ends.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ConfigError(f"num_steps={num_steps!r} must be an integer >= 1 (try 4, 16 or 64)")
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ConfigError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    u = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    if spacing == "uniform":
        f = u
    elif spacing == "quadratic":
        f = u**2
    elif spacing == "cosine":
        f = 0.5 * (1 - torch.cos(math.pi * u))
    else:
        raise ConfigError(f"unknown spacing {spacing!r}: expected one of {', '.join(SPACINGS)}")
    return t_min + (t_max - t_min) * f
