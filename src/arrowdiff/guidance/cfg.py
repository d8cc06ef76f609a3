"""Classifier-free guidance (Ho & Salimans 2022) for the masked-token denoiser.

For log-probability predictions the guided distribution is
    log p_w = log p_uncond + w * (log p_cond - log p_uncond), renormalised,
so w=0 is unconditioned, w=1 is conditioned, w>1 sharpens towards the condition (as in LLaDA's
unsupervised CFG for masked diffusion, Nie et al. 2025).
"""

from __future__ import annotations

import torch
from torch import Tensor

from arrowdiff.errors import ConfigError
from arrowdiff.network.denoiser import Cond, Denoiser


def classifier_free(cond_denoiser: Denoiser, uncond_denoiser: Denoiser, scale: float) -> Denoiser:
    """Return a denoiser that mixes conditioned and unconditioned log-probabilities with weight ``scale``."""
    if not 0.0 <= scale <= 20.0:
        raise ConfigError(f"guidance_scale={scale} must be in [0, 20]: 1.0 means no guidance")
    if scale == 1.0:
        return cond_denoiser
    if scale == 0.0:
        return uncond_denoiser

    def guided(x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        lc, lu = cond_denoiser(x_t, t, cond), uncond_denoiser(x_t, t, cond)
        finite = torch.isfinite(lc) & torch.isfinite(lu)
        mix = torch.where(finite, lu + scale * (lc - lu), torch.full_like(lc, float("-inf")))
        # keep carried-over (one-hot) rows exact: they are identical in both predictions
        mix = torch.where(torch.isfinite(lc).sum(-1, keepdim=True) == 1, lc, mix)
        return torch.log_softmax(mix, dim=-1)

    return guided


def prompt_dropped(denoiser: Denoiser, prompt_positions: Tensor, mask_id: int) -> Denoiser:
    """The unconditioned twin of a prompted denoiser: the prompt tokens are replaced by masks.

    prompt_positions: (B, T) bool. The returned log-probabilities at prompt positions are meaningless
    (they are copied from the conditioned pass by the sampler, which never resamples committed tokens).
    """

    def uncond(x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        x = torch.where(prompt_positions, torch.full_like(x_t, mask_id), x_t)
        logp = denoiser(x, t, cond)
        onehot = torch.full_like(logp, float("-inf")).scatter_(-1, x_t[..., None], 0.0)
        return torch.where(prompt_positions[..., None], onehot, logp)

    return uncond
