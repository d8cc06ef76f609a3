"""Discrete masking schedules for absorbing-state (masked) diffusion (R11.1, R11.2, R1.2).

Notation (MDLM, Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models"):

    t in [0, 1]       diffusion time; t=0 is clean data, t=1 is fully masked
    alpha(t)          probability that a token is still clean at time t
    m(t) = 1-alpha(t) probability that a token is masked at time t (what these functions return)
    w(t) = m'(t)/m(t) weight of the continuous-time NELBO: -alpha'(t) / (1 - alpha(t))

Each schedule is a plain function ``t -> m(t)`` with m(0)=0, m(1)=1, non-decreasing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from arrowdiff.errors import ConfigError

MaskSchedule = Callable[[Tensor], Tensor]

_LINEAR_SIGMA_MAX = -math.log(1e-4)  # linear-in-sigma reaches alpha(1) = 1e-4; the endpoint is pinned to 1


def loglinear(t: Tensor) -> Tensor:
    """m(t) = t: total noise sigma(t) = -log(1-t) is log-linear; MDLM's default schedule."""
    return t


def cosine(t: Tensor) -> Tensor:
    """m(t) = 1 - cos(pi t / 2): masks slowly at first (more steps spent near clean data)."""
    return 1.0 - torch.cos(0.5 * math.pi * t)


def linear(t: Tensor) -> Tensor:
    """Noise sigma(t) linear in t (alpha = exp(-sigma_max t)), rescaled so m(1) = 1 exactly."""
    return -torch.expm1(-_LINEAR_SIGMA_MAX * t) / -math.expm1(-_LINEAR_SIGMA_MAX)


DISCRETE_SCHEDULES: dict[str, MaskSchedule] = {"loglinear": loglinear, "cosine": cosine, "linear": linear}


def validate_schedule(fn: MaskSchedule, num_points: int = 257, atol: float = 1e-5) -> MaskSchedule:
    """Check a custom schedule: endpoints m(0)=0, m(1)=1, values in [0, 1], non-decreasing in t."""
    t = torch.linspace(0.0, 1.0, num_points, dtype=torch.float64)
    try:
        m = fn(t).to(torch.float64)
    except Exception as e:  # a user callable can fail in any way; report it as a config problem
        raise ConfigError(f"custom masking schedule failed on a tensor of times: {e}") from e
    if m.shape != t.shape:
        raise ConfigError(
            f"custom masking schedule returned shape {tuple(m.shape)} for input {tuple(t.shape)}"
        )
    if abs(m[0].item()) > atol or abs(m[-1].item() - 1.0) > atol:
        raise ConfigError(
            f"custom masking schedule must satisfy m(0)=0 and m(1)=1; got m(0)={m[0].item():.4g}, "
            f"m(1)={m[-1].item():.4g}"
        )
    if (m < -atol).any() or (m > 1 + atol).any():
        raise ConfigError("custom masking schedule must return probabilities in [0, 1]")
    if (m[1:] - m[:-1] < -atol).any():
        raise ConfigError("custom masking schedule must be non-decreasing in t (more noise at larger t)")
    return fn


def get_mask_schedule(name_or_fn: str | MaskSchedule) -> MaskSchedule:
    """Look up a named schedule, or validate and return a custom callable (R11.4)."""
    if callable(name_or_fn):
        return validate_schedule(name_or_fn)
    if name_or_fn not in DISCRETE_SCHEDULES:
        raise ConfigError(
            f"unknown masking schedule {name_or_fn!r}: expected one of {sorted(DISCRETE_SCHEDULES)} "
            "or a callable t -> mask probability"
        )
    return DISCRETE_SCHEDULES[name_or_fn]


def nelbo_weight(schedule: MaskSchedule, t: Tensor) -> Tensor:
    """w(t) = m'(t) / m(t), the continuous-time NELBO weight, by autograd (works for any schedule)."""
    with torch.enable_grad():
        tt = t.detach().to(torch.float64).requires_grad_(True)
        m = schedule(tt)
        (dm,) = torch.autograd.grad(m.sum(), tt)
    return (dm / m.detach().clamp_min(1e-12)).to(t.dtype)  # a constant weight: no graph into the loss


def mask_tokens(
    x0: Tensor, t: Tensor, schedule: MaskSchedule, mask_id: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Forward process q(x_t | x0): mask each token independently with probability m(t) (R1.2).

    x0: (B, T) token ids; t: (B,) times. Returns (x_t, is_masked), both (B, T).
    """
    p = schedule(t).to(torch.float32)[:, None]  # (B, 1)
    # draw on the generator's device (a CPU generator keeps batches reproducible across devices)
    u = torch.rand(x0.shape, generator=generator, device=generator.device if generator else x0.device)
    u = u.to(x0.device)
    is_masked = u < p
    return torch.where(is_masked, torch.full_like(x0, mask_id), x0), is_masked
