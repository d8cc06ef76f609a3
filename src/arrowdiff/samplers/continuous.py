"""Continuous samplers for latent Gaussian diffusion on the flow path x_t = (1 - t) x0 + t eps (R2.3).

The denoiser predicts the velocity v = eps - x0 (rectified flow / flow matching: Liu et al. 2023,
Lipman et al. 2023; as in Stable Diffusion 3, Esser et al. 2024). From one prediction at time t:

    x0_hat = x_t - t v,    eps_hat = x_t + (1 - t) v

``sample_euler`` integrates the probability-flow ODE dx/dt = v from t=1 to 0; on this path one Euler
step equals a DDIM step (Song et al. 2021) with eta = 0. ``sample_stochastic`` is DDIM's eta family on
the same path (a_t = 1 - t, s_t = t), from time t to s < t:

    x_s = a_s x0_hat + sqrt(s_s^2 - sigma^2) eps_hat + sigma z,   z ~ N(0, I)
    sigma = eta * s_s * sqrt(1 - (a_t s_s / (a_s s_t))^2)

eta = 1 is ancestral sampling from the DDPM posterior q(x_s | x_t, x0_hat); eta = 0 is Euler. Both
samplers start from N(0, I) in latent space.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from arrowdiff.errors import ConfigError

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (x_t, t (B,)) -> v, the cond is bound by the caller
StepCallback = Callable[[int, Tensor], None]


def initial_noise(shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
    """x_1 ~ N(0, I): the start of every continuous sampler."""
    return torch.randn(shape, generator=generator)


def _check_times(times: Tensor) -> None:
    if times.dim() != 1 or len(times) < 2 or not bool((times[1:] < times[:-1]).all()):
        raise ConfigError("times must be a decreasing 1-D sequence of at least 2 values (see timesteps())")


@torch.no_grad()
def sample_euler(
    velocity: VelocityFn, x: Tensor, times: Tensor, callback: StepCallback | None = None
) -> Tensor:
    """Deterministic: x_s = x_t + (s - t) v(x_t, t) over the decreasing ``times`` (from 1 to 0)."""
    _check_times(times)
    for i in range(len(times) - 1):
        t, s = float(times[i]), float(times[i + 1])
        v = velocity(x, torch.full((x.shape[0],), t, dtype=x.dtype))
        x = x + (s - t) * v
        if callback is not None:
            callback(i, x)
    return x


@torch.no_grad()
def sample_stochastic(
    velocity: VelocityFn,
    x: Tensor,
    times: Tensor,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Stochastic (ancestral when ``eta`` = 1) sampling: predict x0 and eps, then step to the next time
    with ``eta`` times the posterior's standard deviation of fresh Gaussian noise."""
    _check_times(times)
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta={eta} must be in [0, 1] (0 = deterministic, 1 = fully stochastic)")
    for i in range(len(times) - 1):
        t, s = float(times[i]), float(times[i + 1])
        v = velocity(x, torch.full((x.shape[0],), t, dtype=x.dtype))
        x0_hat, eps_hat = x - t * v, x + (1 - t) * v
        a_t, s_t, a_s = 1 - t, t, 1 - s
        sigma = eta * s * max(0.0, 1 - (a_t * s / (a_s * s_t)) ** 2) ** 0.5 if s > 0 else 0.0
        x = a_s * x0_hat + (s * s - sigma * sigma) ** 0.5 * eps_hat
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        if callback is not None:
            callback(i, x)
    return x


CONTINUOUS_SAMPLERS = {"euler": sample_euler, "stochastic": sample_stochastic}

__all__ = ["CONTINUOUS_SAMPLERS", "initial_noise", "sample_euler", "sample_stochastic"]
