"""Conditioners: external signals -> cross-attention context tokens for the shared backbone (R5.3, R5.4).

``MemoryProjection`` maps the top-K retrieved memory embeddings (MiniLM, 384-d) to K context tokens of the
backbone's conditioning width, behind one learned *null* token that is always attended. Rows without
memories (condition dropout in training, unconditioned sampling) attend to the null token alone, which
is both what classifier-free guidance needs (Ho & Salimans 2022: one network, conditioned and not) and
what keeps attention well defined when every memory is masked out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from arrowdiff.errors import ConfigError


class MemoryProjection(nn.Module):
    """(B, K, E) memory embeddings + (B, K) mask -> (B, 1 + K, D_cond) context tokens + (B, 1 + K) mask."""

    def __init__(self, embed_dim: int, cond_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.proj = nn.Sequential(nn.Linear(embed_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        self.null = nn.Parameter(torch.randn(1, 1, cond_dim) * 0.02)

    def forward(self, memory: Tensor | None, memory_mask: Tensor | None, batch: int) -> tuple[Tensor, Tensor]:
        null = self.null.expand(batch, 1, -1)
        ones = torch.ones(batch, 1, dtype=torch.bool, device=null.device)
        if memory is None:
            return null, ones
        if memory.dim() != 3 or memory.shape[0] != batch or memory.shape[-1] != self.embed_dim:
            raise ConfigError(
                f"memory embeddings of shape {tuple(memory.shape)}: expected ({batch}, K, {self.embed_dim})"
            )
        if memory_mask is None:
            memory_mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        tokens = self.proj(memory.to(null.dtype))
        return torch.cat([null, tokens], dim=1), torch.cat([ones, memory_mask.bool()], dim=1)


__all__ = ["MemoryProjection"]
