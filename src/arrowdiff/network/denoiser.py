"""The one denoiser interface: ``denoiser(x_t, t, cond) -> prediction``.

For masked tokens the prediction is log p_theta(x0 | x_t) over the vocabulary, (B, T, V), in MDLM's
SUBS parameterisation (Sahoo et al. 2024): the mask token gets zero probability ("zero masking
probabilities") and already-unmasked tokens are copied ("carry-over unmasking"). Samplers and guidance
only ever call this interface.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from arrowdiff.network.model import UnifiedModel


@dataclass(frozen=True)
class Cond:
    """Conditioning passed through the denoiser to the backbone."""

    context: Tensor | None = None  # (B, K, D_cond) cross-attention tokens (memories, captions, speaker)
    context_mask: Tensor | None = None  # (B, K) bool, True = attend
    residuals: Sequence[Tensor] | None = None  # ControlNet residuals, one per block
    memory: Tensor | None = None  # (B, K, 384) retrieved memory embeddings (memory-guided generation)
    memory_mask: Tensor | None = None  # (B, K) bool, True = a real memory


Denoiser = Callable[[Tensor, Tensor, Cond | None], Tensor]


def subs_log_probs(logits: Tensor, x_t: Tensor, mask_id: int) -> Tensor:
    """SUBS: log-probabilities with p(mask)=0 everywhere and one-hot rows at unmasked positions."""
    logits = logits.float().index_fill(-1, torch.tensor([mask_id], device=logits.device), float("-inf"))
    logp = torch.log_softmax(logits, dim=-1)  # out of place above: the caller's logits stay untouched
    unmasked = (x_t != mask_id)[..., None]
    copy = torch.full_like(logp, float("-inf")).scatter_(-1, x_t[..., None], 0.0)
    return torch.where(unmasked, copy, logp)


class MaskedDenoiser:
    """Wraps a UnifiedModel for one token modality ('text' or 'code') as a denoiser callable."""

    def __init__(self, model: UnifiedModel, modality: str) -> None:
        model.head(modality)  # raises a clear ModalityError early
        self.model = model
        self.modality = modality
        self.mask_id = model.cfg.text.mask_id

    @torch.no_grad()
    def __call__(self, x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        cond = cond or Cond()
        memory, memory_mask = cond.memory, cond.memory_mask
        if memory is not None and memory.shape[0] != x_t.shape[0]:  # one memory set for the whole batch
            memory = memory.expand(x_t.shape[0], -1, -1)
            memory_mask = None if memory_mask is None else memory_mask.expand(x_t.shape[0], -1)
        cond = Cond(cond.context, cond.context_mask, cond.residuals, memory, memory_mask)
        logits = self.model(
            x_t,
            t,
            self.modality,
            cond.context,
            cond.context_mask,
            cond.residuals,
            cond.memory,
            cond.memory_mask,
        )
        return subs_log_probs(logits, x_t, self.mask_id)
