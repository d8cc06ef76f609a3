"""Transformer building blocks: RoPE, self/cross attention, SwiGLU, adaLN-Zero block.

Shapes: B batch, T tokens, K context tokens, D width, H heads, Dh = D / H.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of diffusion time (Vaswani et al. 2017; as in DDPM/DiT) (R4.4).

    t: any shape of times in [0, 1]; returns t.shape + (dim,). Time is scaled by 1000 so the
    embedding resolves the small t steps of a 1,000-level discretisation.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_tables(max_len: int, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """cos/sin tables (max_len, head_dim/2) for rotary position embeddings (Su et al. 2021)."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    ang = torch.arange(max_len, dtype=torch.float32)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of x (B, H, T, Dh) by position angles cos/sin (T, Dh/2)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)


def zero_init(layer: nn.Linear) -> nn.Linear:
    """Zero a layer's weights and mark it so the backbone's normal init leaves it at zero."""
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    layer.zero_init = True
    return layer


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation (Peebles & Xie 2023, DiT)."""
    return x * (1 + scale) + shift


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, causal: bool) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, T, Dh)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class CrossAttention(nn.Module):
    """Queries from the sequence, keys/values from conditioning tokens (memories, captions, speakers).

    The output projection starts at zero, so a model trained without context is unchanged by it.
    """

    def __init__(self, dim: int, cond_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(cond_dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        zero_init(self.out)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None) -> Tensor:
        B, T, D = x.shape
        K, H = context.shape[1], self.num_heads
        q = self.q(x).view(B, T, H, D // H).transpose(1, 2)
        k, v = self.kv(context).view(B, K, 2, H, D // H).permute(2, 0, 3, 1, 4)
        mask = None if context_mask is None else context_mask[:, None, None, :]  # (B, 1, 1, K) True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class SwiGLU(nn.Module):
    """Gated MLP (Shazeer 2020)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        g, u = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(g) * u)


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-Zero time conditioning (DiT) and an optional cross-attention.

    The adaLN projection is zero-initialised, so every block starts as the identity.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, cond_dim: int, time_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
        self.cross = CrossAttention(dim, cond_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = SwiGLU(dim, mlp_dim)
        self.ada = nn.Linear(time_dim, 6 * dim)
        zero_init(self.ada)

    def forward(
        self,
        h: Tensor,
        c: Tensor,
        cos: Tensor,
        sin: Tensor,
        causal: bool,
        context: Tensor | None,
        context_mask: Tensor | None,
    ) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)  # each (B, 1|T, D)
        h = h + gate1 * self.attn(modulate(self.norm1(h), shift1, scale1), cos, sin, causal)
        if context is not None:
            h = h + self.cross(self.norm_cross(h), context, context_mask)
        return h + gate2 * self.mlp(modulate(self.norm2(h), shift2, scale2))
