"""SharedTransformer: the one score network every modality goes through (R4.1-R4.4, R4.6).

It maps token vectors (B, T, D) + diffusion time + per-token modality ids + optional cross-attention
context (B, K, D_cond) + optional ControlNet residuals to hidden states (B, T, D). It never branches on
modality: heads own embed() and project().
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from arrowdiff.config import BackboneConfig
from arrowdiff.errors import ConfigError
from arrowdiff.network.layers import Block, modulate, rope_tables, sinusoidal_embedding, zero_init


class SharedTransformer(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.modality_embed = nn.Embedding(cfg.num_modalities, cfg.dim)  # R4.3
        nn.init.normal_(self.modality_embed.weight, std=0.02)
        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.time_dim, cfg.time_dim), nn.SiLU(), nn.Linear(cfg.time_dim, cfg.time_dim)
        )
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.num_heads, cfg.mlp_dim, cfg.cond_dim, cfg.time_dim)
            for _ in range(cfg.num_layers)
        )
        self.norm_out = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(cfg.time_dim, 2 * cfg.dim)
        zero_init(self.ada_out)
        cos, sin = rope_tables(cfg.max_seq_len, cfg.head_dim, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(_init_linear)

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        modality: Tensor,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        residuals: Sequence[Tensor] | None = None,
        causal: bool = False,
    ) -> Tensor:
        """x: (B, T, D) embedded tokens; t: (B,) or (B, T) times in [0, 1]; modality: (B, T) ids;
        context: (B, K, D_cond); context_mask: (B, K) bool, True = attend; residuals: one (B, T, D)
        tensor per block (ControlNet), added after that block. Returns (B, T, D)."""
        B, T, D = x.shape
        if T > self.cfg.max_seq_len:
            raise ConfigError(f"sequence of {T} tokens exceeds max_seq_len={self.cfg.max_seq_len}")
        if residuals is not None and len(residuals) != len(self.blocks):
            raise ConfigError(f"got {len(residuals)} ControlNet residuals for {len(self.blocks)} blocks")
        c = F.silu(self.time_mlp(sinusoidal_embedding(t, self.cfg.time_dim)))
        c = c[:, None, :] if c.dim() == 2 else c  # (B, 1|T, Dt): per-sample or per-token time
        h = x + self.modality_embed(modality)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        for i, block in enumerate(self.blocks):
            h = block(h, c, cos, sin, causal, context, context_mask)
            if residuals is not None:
                h = h + residuals[i]
        shift, scale = self.ada_out(c).chunk(2, dim=-1)
        return modulate(self.norm_out(h), shift, scale)


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear) and not getattr(m, "zero_init", False):  # keep deliberate zero inits
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["SharedTransformer", "count_parameters"]
