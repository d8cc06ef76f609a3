"""A LLaMA-architecture causal language model with a preallocated KV cache.

LLaMA (Touvron et al. 2023): pre-norm decoder blocks with RMSNorm (Zhang & Sennrich 2019), rotary position
embeddings (RoPE, Su et al. 2021), grouped-query attention (GQA, Ainslie et al. 2023: ``n_kv_heads`` key/value
heads shared by groups of query heads) and a SwiGLU feed-forward (Shazeer 2020). Written to load SmolLM2-135M
(converted from its GGUF by :mod:`arrowdiff.ar.gguf_convert`) and tiny random configs for tests.

Layout choices for CPU decode speed: the query/key/value projections are ONE linear (``wqkv``) and the gate/up
projections ONE linear (``w13``), so a decode step runs 4 matmuls per block instead of 7. RoPE uses the
"rotate half" convention of the Hugging Face checkpoints (llama.cpp's GGUF rows are un-permuted when
converting).

Decode fast path: for one new token with fp32 activations, a KV cache and gradients off on CPU,
:meth:`LlamaModel.forward` runs :meth:`Block.decode` instead of the blocks' ``forward`` when the C++
extension of :mod:`arrowdiff.weights.q4avx2` is loaded in the process (the q4avx2 compute form loads it;
other fp32 forms use it only if it already is; ``LlamaModel.fused_decode = False`` switches it off).
Its fused ops do the same math as the torch code here, which stays the reference (prefill, bf16 forms,
training): residual add + RMSNorm in one call, RoPE + KV-cache write + GQA softmax attention in one call,
and silu(gate) * up in one call; the block's linears are still its modules.

Notation: B batch, T new tokens, S cached + new positions, D width, H query heads, Hkv key/value heads,
hd head width, F feed-forward width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arrowdiff.errors import ConfigError
from arrowdiff.weights import q4avx2


@dataclass(frozen=True)
class LlamaConfig:
    """Architecture of a LLaMA-style model (saved as ``llama_config`` in metadata.json)."""

    vocab_size: int = 49152  # V, rows of the token embedding
    dim: int = 576  # D, residual width
    n_layers: int = 30  # decoder blocks
    n_heads: int = 9  # H, query heads
    n_kv_heads: int = 3  # Hkv, key/value heads (GQA); n_heads must be a multiple
    hidden_dim: int = 1536  # F, SwiGLU inner width
    rope_theta: float = 100000.0  # RoPE frequency base (the GGUF's llama.rope.freq_base)
    norm_eps: float = 1e-5  # RMSNorm epsilon
    max_seq_len: int = 8192  # longest context (RoPE tables and the KV cache bound)
    tie_embeddings: bool = True  # output projection shares the token embedding matrix
    bos_id: int | None = 1  # tokenizer ids the checkpoint declares (None: none)
    eos_id: int | None = 2

    def __post_init__(self) -> None:
        for f in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "max_seq_len"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise ConfigError(f"LlamaConfig.{f}={getattr(self, f)!r} must be an integer >= 1")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ConfigError(
                f"LlamaConfig.dim={self.dim} must split over n_heads={self.n_heads} into an even head width"
            )
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"LlamaConfig.n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads} (GQA)"
            )
        if not self.rope_theta > 0 or not self.norm_eps > 0:
            raise ConfigError(f"rope_theta={self.rope_theta} and norm_eps={self.norm_eps} must be > 0")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LlamaConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown LlamaConfig keys {unknown}; allowed: {sorted(known)}")
        return cls(**d)


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin (max_seq_len, head_dim) for the rotate-half convention, in fp32 as HF computes them."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)  # (S, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (S, hd)
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, heads, T, hd) by the angles in cos/sin (T, hd): x * cos + rotate_half(x) * sin."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class KVCache:
    """Per-layer key/value buffers (B, Hkv, max_len, hd), allocated once; ``length`` positions are filled."""

    def __init__(self, cfg: LlamaConfig, batch: int, max_len: int, dtype: torch.dtype) -> None:
        if max_len > cfg.max_seq_len:
            raise ConfigError(f"cache length {max_len} exceeds the model's max_seq_len={cfg.max_seq_len}")
        shape = (batch, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype) for _ in range(cfg.n_layers)]
        self.max_len = max_len
        self.length = 0  # positions filled so far (== the next token's position)


class Attention(nn.Module):
    """Causal grouped-query self-attention with RoPE, reading and writing a KV cache when given one."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, q_dim + 2 * kv_dim, bias=False)
        self.wo = nn.Linear(q_dim, cfg.dim, bias=False)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, layer: int, cache: KVCache | None, start: int
    ) -> Tensor:
        B, T, _ = x.shape
        H, Hkv = self.n_heads, self.n_kv_heads
        qkv = self.wqkv(x).view(B, T, H + 2 * Hkv, self.head_dim).transpose(1, 2)  # (B, H + 2Hkv, T, hd)
        q, k = apply_rope(qkv[:, : H + Hkv], cos, sin).split([H, Hkv], dim=1)  # one rotation for q and k
        v = qkv[:, H + Hkv :]  # (B, Hkv, T, hd)
        if cache is not None:
            cache.k[layer][:B, :, start : start + T] = k
            cache.v[layer][:B, :, start : start + T] = v
            k, v = cache.k[layer][:B, :, : start + T], cache.v[layer][:B, :, : start + T]  # (B, Hkv, S, hd)
        S = k.shape[2]
        mask, causal = None, False
        if T > 1 and S == T:
            causal = True
        elif T > 1:  # new tokens after a cached prefix: row i sees positions <= start + i
            mask = torch.arange(S) <= (start + torch.arange(T))[:, None]  # (T, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, D)

    def decode(self, x: Tensor, layer: int, cache: KVCache, start: int, cos: Tensor, sin: Tensor) -> Tensor:
        """:meth:`forward` for one new token (B, 1, D) at position ``start`` through the fused op; cos/sin
        are the whole (max_seq_len, hd) tables."""
        y = q4avx2.decode_attention(
            self.wqkv(x), cache.k[layer], cache.v[layer], cos, sin, start, self.n_heads, self.n_kv_heads
        )  # (B, 1, H hd)
        return self.wo(y)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(x W_gate) * x W_up), gate and up fused in ``w13``."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.hidden_dim = cfg.hidden_dim
        self.w13 = nn.Linear(cfg.dim, 2 * cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).split(self.hidden_dim, dim=-1)
        return self.w2(F.silu(gate) * up)

    def decode(self, x: Tensor) -> Tensor:
        """:meth:`forward` with silu(gate) * up as one fused op (fp32)."""
        return self.w2(q4avx2.silu_mul(self.w13(x)))


class RMSNorm(nn.Module):
    """x / rms(x) * weight (Zhang & Sennrich 2019) in one fused op, in the dtype of x (the loader keeps the
    weight in the activations' dtype so that no cast runs per call)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        return F.rms_norm(x, (x.shape[-1],), w, self.eps)


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = FeedForward(cfg)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, layer: int, cache: KVCache | None, start: int
    ) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, layer, cache, start)
        return x + self.mlp(self.mlp_norm(x))

    def decode(
        self,
        h: Tensor,
        delta: Tensor | None,
        layer: int,
        cache: KVCache,
        start: int,
        cos: Tensor,
        sin: Tensor,
    ) -> Tensor:
        """The fused one-token step: ``h += delta`` (the previous block's MLP output) IN PLACE, then this
        block; returns this block's MLP output, which the next block (or the final norm) adds."""
        x = q4avx2.add_rms_norm(delta, h, self.attn_norm.weight, self.attn_norm.eps)
        a = self.attn.decode(x, layer, cache, start, cos, sin)
        return self.mlp.decode(q4avx2.add_rms_norm(a, h, self.mlp_norm.weight, self.mlp_norm.eps))


class LlamaModel(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, V); with a cache, T new tokens after ``cache.length``."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        # tied: logits = h E^T through the embedding itself (a loader may set a faster form here)
        self.output: nn.Module | None = (
            None if cfg.tie_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        )
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.act_dtype = torch.float32  # activations' dtype; the loader sets bf16 for bf16/int4 compute
        self.fused_decode = True  # one-token fp32 decode through the fused ops when they are loaded

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        return KVCache(self.cfg, batch, max_len or self.cfg.max_seq_len, self.act_dtype)

    def forward(self, ids: Tensor, cache: KVCache | None = None, last_only: bool = False) -> Tensor:
        B, T = ids.shape
        start = cache.length if cache is not None else 0
        limit = cache.max_len if cache is not None else self.cfg.max_seq_len
        if start + T > limit:
            raise ConfigError(f"{start + T} positions exceed the context of {limit}; shorten the prompt")
        if cache is not None and T == 1 and self._fused_ok(ids, cache):
            return self._decode_fused(ids, cache)
        dt = self.act_dtype
        cos = self.rope_cos[start : start + T].to(dt)  # (T, hd)
        sin = self.rope_sin[start : start + T].to(dt)
        h = self.tok_embeddings(ids).to(dt)  # (B, T, D)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, i, cache, start)
        if cache is not None:
            cache.length = start + T
        if last_only:
            h = h[:, -1:]
        return self._logits(self.norm(h))

    def _logits(self, h: Tensor) -> Tensor:
        if self.output is None:
            return F.linear(h.float(), self.tok_embeddings.weight.float())  # (B, T or 1, V)
        return self.output(h).float()  # (B, T or 1, V)

    def _fused_ok(self, ids: Tensor, cache: KVCache) -> bool:
        """Whether a one-token step may take the fused path (fp32 on CPU, no autograd, ops loaded)."""
        return (
            self.fused_decode
            and self.act_dtype == torch.float32
            and cache.k[0].dtype == torch.float32
            and ids.device.type == "cpu"
            and not torch.is_grad_enabled()
            and q4avx2.kernel_loaded()
        )

    def _decode_fused(self, ids: Tensor, cache: KVCache) -> Tensor:
        """forward for one new token through the fused ops: the residual stream ``h`` is updated in place
        and each block's output is added by the next block's first norm (one call per norm, no adds)."""
        start = cache.length
        h = self.tok_embeddings(ids).float().contiguous()  # (B, 1, D), a fresh tensor
        delta = None
        for i, layer in enumerate(self.layers):
            delta = layer.decode(h, delta, i, cache, start, self.rope_cos, self.rope_sin)
        cache.length = start + 1
        return self._logits(q4avx2.add_rms_norm(delta, h, self.norm.weight, self.norm.eps))
