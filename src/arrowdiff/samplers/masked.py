"""DiscreteSampler: plain sampling functions over a masked-token denoiser (R1.1, R1.3, R1.4, R7.4).

Every function takes ``denoiser(x_t, t, cond) -> log p(x0 | x_t)`` (B, T, V), a start sequence x whose
positions to generate hold the mask id (anything else, e.g. an infilling prefix and suffix, is kept
exactly), and decreasing times ``times[0] = 1 > ... > times[-1] = 0`` (``schedules.timesteps``). Between
times t > s a masked token is revealed with probability (m(t) - m(s)) / m(t), where m is the masking
schedule: the reverse process of absorbing-state diffusion. Tokens once revealed never change.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from arrowdiff.errors import ConfigError
from arrowdiff.network.denoiser import Cond, Denoiser
from arrowdiff.schedules.masking import MaskSchedule

StepCallback = Callable[[int, Tensor], None]


def _sample_tokens(logp: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """Draw x0 candidates from log-probabilities (B, T, V) at a temperature (0 = argmax)."""
    if temperature == 0.0:
        return logp.argmax(-1)
    probs = torch.softmax(logp / temperature, dim=-1)
    B, T, V = probs.shape
    return torch.multinomial(probs.view(-1, V), 1, generator=generator).view(B, T)


def _gumbel(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-10, 1 - 1e-10)
    return -torch.log(-torch.log(u))


def reveal_fraction(schedule: MaskSchedule, t: float, s: float) -> float:
    """Fraction of still-masked tokens revealed when stepping from t down to s."""
    mt = float(schedule(torch.tensor(t, dtype=torch.float64)))
    ms = float(schedule(torch.tensor(s, dtype=torch.float64)))
    return 1.0 if mt <= 0 else max(0.0, min(1.0, (mt - ms) / mt))


def sample_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    times: Tensor,
    schedule: MaskSchedule,
    mask_id: int,
    cond: Cond | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """MDLM ancestral sampling (Sahoo et al. 2024, Alg. 2): each masked token independently unmasks
    with probability (m(t)-m(s))/m(t), taking a token drawn from p_theta(x0 | x_t)."""
    _check_times(times)
    x = x.clone()
    for i in range(len(times) - 1):
        t, s = float(times[i]), float(times[i + 1])
        masked = x == mask_id
        if not masked.any():
            break
        logp = denoiser(x, torch.full((x.shape[0],), t, device=x.device), cond)
        cand = _sample_tokens(logp, temperature, generator)
        frac = 1.0 if i == len(times) - 2 else reveal_fraction(schedule, t, s)
        reveal = masked & (torch.rand(x.shape, generator=generator, device=x.device) < frac)
        x = torch.where(reveal, cand, x)
        if callback is not None:
            callback(i, x)
    return x


def sample_confidence(
    denoiser: Denoiser,
    x: Tensor,
    times: Tensor,
    schedule: MaskSchedule,
    mask_id: int,
    cond: Cond | None = None,
    temperature: float = 1.0,
    confidence_noise: float = 1.0,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Confidence-ordered unmasking (MaskGIT, Chang et al. 2022; LLaDA's low-confidence remasking).

    At each step the schedule fixes HOW MANY tokens to reveal (round(n0 * m(s)) stay masked, n0 being
    the row's initial mask count); the model's confidence chooses WHICH: candidates are sampled at
    ``temperature`` and ranked by log-probability plus ``confidence_noise`` times Gumbel noise, which
    keeps greedy ranking from collapsing into whitespace and repetition (DESIGN.md).
    """
    _check_times(times)
    x = x.clone()
    n0 = (x == mask_id).sum(-1)  # (B,)
    m_start = float(schedule(torch.tensor(float(times[0]), dtype=torch.float64)))
    for i in range(len(times) - 1):
        t, s = float(times[i]), float(times[i + 1])
        masked = x == mask_id
        if not masked.any():
            break
        logp = denoiser(x, torch.full((x.shape[0],), t, device=x.device), cond)
        cand = _sample_tokens(logp, temperature, generator)
        conf = logp.gather(-1, cand[..., None]).squeeze(-1)
        if confidence_noise > 0:
            conf = conf + confidence_noise * _gumbel(conf.shape, generator, x.device)
        conf = conf.masked_fill(~masked, float("-inf"))
        ms = float(schedule(torch.tensor(s, dtype=torch.float64))) / max(m_start, 1e-12)
        keep_masked = torch.round(n0.double() * ms).long() if i < len(times) - 2 else torch.zeros_like(n0)
        k = (masked.sum(-1) - keep_masked).clamp_min(0)  # (B,) tokens to reveal in each row
        order = conf.argsort(dim=-1, descending=True)
        rank = torch.empty_like(order).scatter_(
            -1, order, torch.arange(x.shape[1], device=x.device).expand_as(x)
        )
        reveal = masked & (rank < k[:, None])
        x = torch.where(reveal, cand, x)
        if callback is not None:
            callback(i, x)
    return x


SAMPLERS = {"confidence": sample_confidence, "ancestral": sample_ancestral}


_PLACEHOLDER = -1  # id that hides later blocks from the sampler in sample_blocks


def sample_blocks(
    sampler: Callable[..., Tensor],
    denoiser: Denoiser,
    x: Tensor,
    times: Tensor,
    block_size: int,
    mask_id: int,
    **kwargs: object,
) -> Tensor:
    """Semi-autoregressive sampling (LLaDA, Nie et al. 2025; block diffusion, Arriola et al. 2025):
    the masked positions are split into blocks of ``block_size`` from left to right and each block is
    sampled in turn with the full step schedule ``times`` while later blocks stay masked."""
    if block_size < 1:
        raise ConfigError(f"block_size={block_size} must be >= 1")
    x = x.clone()
    masked_cols = (x == mask_id).any(0).nonzero().flatten()
    for start in range(0, len(masked_cols), block_size):
        cols = masked_cols[start : start + block_size]
        later = torch.zeros_like(x, dtype=torch.bool)
        later[:, masked_cols[start + block_size :]] = True
        # later blocks are hidden from the sampler behind a placeholder id (so it neither counts nor
        # reveals them) and shown to the denoiser as masks
        active = torch.where(later & (x == mask_id), torch.full_like(x, _PLACEHOLDER), x)

        def wrapped(x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
            return denoiser(torch.where(x_t == _PLACEHOLDER, mask_id, x_t), t, cond)

        active = sampler(wrapped, active, times, mask_id=mask_id, **kwargs)
        x[:, cols] = active[:, cols]
    return x


def _check_times(times: Tensor) -> None:
    if times.dim() != 1 or len(times) < 2:
        raise ConfigError("times must be a 1-D tensor of at least 2 decreasing values (num_steps >= 1)")
    if (times[1:] >= times[:-1]).any():
        raise ConfigError("times must be strictly decreasing from t=1 (all masked) to t=0 (clean)")
