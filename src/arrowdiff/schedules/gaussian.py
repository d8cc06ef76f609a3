"""Continuous Gaussian noise schedules for image and audio latents (R11.1, R11.3).

Notation (variance-preserving form, Ho et al. 2020; Kingma et al. 2021):

    x_t = a(t) * x0 + s(t) * eps,   eps ~ N(0, I),   t in [0, 1]
    a(t)  signal scale, a(0)=1;  s(t) noise std, increasing in t, s(1) close to 1

Each schedule is a plain function ``t -> (a, s)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from arrowdiff.errors import ConfigError

GaussianSchedule = Callable[[Tensor], tuple[Tensor, Tensor]]


def cosine(t: Tensor, s: float = 0.008) -> tuple[Tensor, Tensor]:
    """Cosine schedule (Nichol & Dhariwal 2021): alpha_bar = cos^2(((t+s)/(1+s)) pi/2), normalised."""
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    abar = f.clamp(1e-9, 1.0)
    return abar.sqrt(), (1 - abar).sqrt()


def linear(t: Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> tuple[Tensor, Tensor]:
    """DDPM's linear betas in continuous time (Song et al. 2021, VP-SDE): log abar = -int beta."""
    log_abar = -(beta_min * t + 0.5 * (beta_max - beta_min) * t**2)
    abar = torch.exp(log_abar)
    return abar.sqrt(), (-torch.expm1(log_abar)).clamp_min(0).sqrt()


def flow(t: Tensor) -> tuple[Tensor, Tensor]:
    """Rectified flow / flow matching path (Lipman et al. 2023; Liu et al. 2023): a=1-t, s=t."""
    return 1 - t, t


GAUSSIAN_SCHEDULES: dict[str, GaussianSchedule] = {"cosine": cosine, "linear": linear, "flow": flow}


def get_gaussian_schedule(name_or_fn: str | GaussianSchedule) -> GaussianSchedule:
    """Look up a named schedule, or validate a custom ``t -> (a, s)`` callable (R11.4)."""
    if callable(name_or_fn):
        t = torch.linspace(0, 1, 257, dtype=torch.float64)
        a, s = name_or_fn(t)
        if (s[1:] - s[:-1] < -1e-6).any() or (a[1:] - a[:-1] > 1e-6).any():
            raise ConfigError(
                "custom Gaussian schedule must have noise std increasing and signal decreasing in t"
            )
        if abs(a[0].item() - 1) > 1e-3 or s[0].item() > 1e-3:
            raise ConfigError(
                f"custom Gaussian schedule must start clean: a(0)=1, s(0)=0; got {a[0].item():.4g}, "
                f"{s[0].item():.4g}"
            )
        return name_or_fn
    if name_or_fn not in GAUSSIAN_SCHEDULES:
        raise ConfigError(
            f"unknown Gaussian schedule {name_or_fn!r}: "
            f"expected one of {sorted(GAUSSIAN_SCHEDULES)} or a callable"
        )
    return GAUSSIAN_SCHEDULES[name_or_fn]


def add_noise(x0: Tensor, t: Tensor, schedule: GaussianSchedule, eps: Tensor | None = None) -> Tensor:
    """Forward process: x_t = a(t) x0 + s(t) eps, with t (B,) broadcast over x0's other dims (R11.6)."""
    eps = torch.randn_like(x0) if eps is None else eps
    a, s = schedule(t.to(x0.dtype))
    shape = (-1,) + (1,) * (x0.dim() - 1)
    return a.view(shape) * x0 + s.view(shape) * eps
