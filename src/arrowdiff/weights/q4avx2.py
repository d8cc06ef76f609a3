"""The "q4avx2" compute form: llama.cpp-style block-quantized GEMV/GEMM on AVX2 + FMA CPUs.

Algorithm reference: llama.cpp / ggml (Georgi Gerganov and contributors, https://github.com/ggml-org/llama.cpp),
its Q4_1 x Q8_1 (and Q8_0 x Q8_0) dot products for AVX2. Our kernel (``kernels/q4_gemv.cpp``) is an
independent implementation of that arithmetic, compiled just in time with
``torch.utils.cpp_extension.load`` the first time it is needed (about 10 s on a 2-core machine) and
cached in torch's extension directory (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``).

Why: on CPUs without native bf16 (AVX2 only) torch's packed INT4 kernel spends its time converting bf16;
integer dot products of 4-bit weight codes with 8-bit activation codes (``_mm256_maddubs_epi16``) do the
same work in a fraction of the instructions and read 0.625 bytes per weight.

The same extension holds fused fp32 ops for one LLaMA decode step (``kernels/decode_ops.cpp``):
:func:`add_rms_norm` (residual add + RMSNorm, Zhang & Sennrich 2019), :func:`silu_mul` (the SwiGLU
product) and :func:`decode_attention` (RoPE, Su et al. 2021, the KV-cache write and grouped-query
attention, Ainslie et al. 2023, for one new token); :mod:`arrowdiff.ar.llama` uses them on its decode
fast path when :func:`kernel_loaded`.

Weight blocks (N, K), 32 values along K per block, one output row's blocks contiguous, ``w = d * c + m``:

    bits 4   20 bytes: fp16 d, fp16 m, 16 bytes of 4-bit codes c (byte j: c[j] low, c[j + 16] high nibble)
    bits 8   36 bytes: fp16 d, fp16 m, 32 int8 codes c

Built from a stored ArrowQuant tensor by :func:`weight_blocks`: 2/4-bit tensors whose group size is a
multiple of 32 keep their codes exactly (d = s, m = -z s, so ``(c - z) s == d c + m``; only m is rounded
to fp16, <= 2**-12 of |m|), 8-bit ones likewise as bits-8 blocks (c - 128, m = (128 - z) s); any other
tensor is dequantized and requantized per block of 32 by min/max (llama.cpp's Q4_1 rule; 8 bits for
tensors stored at 8 or more bits). Activations are quantized per call, per row and block of 32, to int8
with scale max|x| / 127 (Q8_1-like, fp32 scale and block sum); see :func:`reference_gemm` for the exact
arithmetic the kernel performs.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from arrowdiff.errors import ConfigError
from arrowdiff.weights.parquet import StoredTensor
from arrowdiff.weights.quantize import unpack

log = logging.getLogger(__name__)

EXTENSION = "arrowdiff_q4avx2"
KERNELS = Path(__file__).parent / "kernels"
SOURCES = (KERNELS / "q4_gemv.cpp", KERNELS / "decode_ops.cpp")  # one extension, both files
CFLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp"]
DISABLE_ENV = "ARROWDIFF_Q4AVX2"  # set to 0 to never build or use the kernel
QK = 32  # values per block
BLOCK_BYTES = {4: 20, 8: 36}
_REQUIRED_FLAGS = ("avx2", "fma", "f16c")

_lock = threading.Lock()
_status: tuple[bool, str] | None = None


def cpu_supports() -> tuple[bool, str]:
    """(True, "") when this CPU runs AVX2 + FMA + F16C code, else (False, why not)."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return False, f"the CPU is {machine}, not x86 with AVX2"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags: set[str] = set()
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.partition(":")[2].split())
                break
        missing = [f for f in _REQUIRED_FLAGS if f not in flags]
        if missing:
            return False, f"the CPU lacks {', '.join(missing)} (/proc/cpuinfo)"
        return True, ""
    cap = torch.backends.cpu.get_cpu_capability()
    if cap not in ("AVX2", "AVX512"):
        return False, f"torch reports CPU capability {cap}, below AVX2"
    return True, ""


def _build() -> tuple[bool, str]:
    if os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False, f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    ok, why = cpu_supports()
    if not ok:
        return False, why
    missing = [s for s in SOURCES if not s.is_file()]
    if missing:
        return False, f"kernel source {missing[0]} is missing from the installation"
    from torch.utils import cpp_extension

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx.split()[0] if cxx.strip() else "c++") is None:
        return False, f"no C++ compiler ({cxx!r} is not on PATH; apt-get install g++)"
    if not cpp_extension.is_ninja_available():
        return False, "ninja is not installed (pip install ninja), torch needs it to build extensions"
    try:
        built = Path(cpp_extension._get_build_directory(EXTENSION, False)) / f"{EXTENSION}.so"
        fresh = not built.is_file() or built.stat().st_mtime < max(s.stat().st_mtime for s in SOURCES)
    except Exception:  # private helper: only decides whether to print the note below
        fresh = True
    if fresh:
        print("arrowdiff: compiling the q4avx2 CPU kernel (first use only, about 10 s)", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        cpp_extension.load(
            name=EXTENSION,
            sources=[str(s) for s in SOURCES],
            extra_cflags=CFLAGS,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
        torch.ops.arrowdiff_q4avx2.gemm  # noqa: B018 -- the library registered its ops
        torch.ops.arrowdiff_q4avx2.decode_attention  # noqa: B018
    except Exception as e:  # a failed build must never break loading: report why and let callers fall back
        first = next((ln.strip() for ln in str(e).splitlines() if "error" in ln.lower()), str(e).strip())
        return False, f"building the kernel failed ({type(e).__name__}: {first[:300]})"
    log.info("q4avx2 kernel ready in %.1f s", time.perf_counter() - t0)
    return True, ""


def kernel_status() -> tuple[bool, str]:
    """(True, "") once the kernel is compiled and loaded in this process, else (False, the reason).
    The first call compiles (or loads the cached build); later calls return the same answer at once."""
    global _status
    with _lock:
        if _status is None:
            _status = _build()
        return _status


def kernel_loaded() -> bool:
    """True when the extension is already built and loaded in this process (never starts a build)."""
    return _status is not None and _status[0]


def require_kernel() -> None:
    """Raise ConfigError (with the reason and the alternatives) unless the kernel is usable."""
    ok, why = kernel_status()
    if not ok:
        raise ConfigError(f"compute='q4avx2' is unavailable: {why}; use 'int4pack', 'int8dyn' or 'bf16'")


# -- weight blocks ---------------------------------------------------------------------------------------


def blocks_from_codes(codes: torch.Tensor, d: torch.Tensor, m: torch.Tensor, bits: int) -> torch.Tensor:
    """(N, nb * 32) codes (uint8 0..15 for bits 4, int8 for bits 8), (N, nb) d and m -> (N, nb * bytes)
    uint8 blocks in the kernel's layout (d and m rounded to fp16)."""
    n, kp = codes.shape
    nb = kp // QK
    d16 = d.to(torch.float16).reshape(n, nb, 1).view(torch.uint8)  # (N, nb, 2)
    m16 = m.to(torch.float16).reshape(n, nb, 1).view(torch.uint8)
    if not (torch.isfinite(d.to(torch.float16)).all() and torch.isfinite(m.to(torch.float16)).all()):
        raise ConfigError("a block's scale or minimum overflows fp16 (|w| > ~6e4); keep this layer in fp32")
    c = codes.reshape(n, nb, QK)
    if bits == 4:
        c = c.to(torch.uint8)
        payload = c[..., :16] | (c[..., 16:] << 4)  # (N, nb, 16)
    else:
        payload = c.to(torch.int8).view(torch.uint8)  # (N, nb, 32)
    return torch.cat([d16, m16, payload], dim=-1).reshape(n, nb * BLOCK_BYTES[bits]).contiguous()


def decode_blocks(blocks: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`blocks_from_codes`: codes (N, nb * 32) int32, d and m (N, nb) fp32."""
    n = blocks.shape[0]
    b = blocks.reshape(n, -1, BLOCK_BYTES[bits])
    d = b[..., 0:2].contiguous().view(torch.float16).float().squeeze(-1)
    m = b[..., 2:4].contiguous().view(torch.float16).float().squeeze(-1)
    p = b[..., 4:]
    if bits == 4:
        codes = torch.cat([p & 0x0F, p >> 4], dim=-1).to(torch.int32)
    else:
        codes = p.contiguous().view(torch.int8).to(torch.int32)
    return codes.reshape(n, -1), d, m


def dequantize_blocks(blocks: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """The (N, in_features) fp32 weight the blocks hold: w = d * c + m."""
    codes, d, m = decode_blocks(blocks, bits)
    n = codes.shape[0]
    w = codes.reshape(n, -1, QK).float() * d.unsqueeze(-1) + m.unsqueeze(-1)
    return w.reshape(n, -1)[:, :in_features]


def quantize_blocks(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Requantize an (N, K) float weight to blocks of 32 by each block's min and max (llama.cpp's Q4_1
    rule: d = (max - min) / 15, m = min; bits 8: 255 steps, codes offset by -128). The codes are rounded
    against the fp16 d and m that are stored. K is padded to a multiple of 32 by repeating the last column
    (so the padding never widens a block's range)."""
    w = w.detach().float()
    n, k = w.shape
    pad = (-k) % QK
    if pad:
        w = torch.cat([w, w[:, -1:].expand(n, pad)], dim=1)
    g = w.reshape(n, -1, QK)
    lo, hi = g.amin(-1), g.amax(-1)  # (N, nb)
    levels = 15 if bits == 4 else 255
    d = ((hi - lo) / levels).to(torch.float16).float()
    m = (lo if bits == 4 else lo + 128 * d).to(torch.float16).float()
    inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    q = torch.round((g - m.unsqueeze(-1)) * inv.unsqueeze(-1))
    q = q.clamp(0, 15) if bits == 4 else q.clamp(-128, 127)
    return blocks_from_codes(q.reshape(n, -1), d, m, bits)


def weight_blocks(stored: StoredTensor) -> tuple[torch.Tensor, int, str]:
    """The kernel's blocks for a stored (N, K) weight: (blocks, bits 4 or 8, "reused" | "requantized")."""
    n, k = stored.shape
    nb = -(-k // QK)
    if stored.bits in (2, 4, 8) and stored.group_size % QK == 0:
        stored.verify()
        q = stored.quantized()
        cols = k + q.pad
        codes = unpack(q.packed, q.bits, n * cols).reshape(n, cols)[:, : nb * QK]
        rep = q.group_size // QK
        s = q.scales.float().repeat_interleave(rep, dim=1)[:, :nb]  # (N, nb)
        z = q.zeros.float().repeat_interleave(rep, dim=1)[:, :nb]
        if q.bits == 8:
            return blocks_from_codes(codes.to(torch.int16) - 128, s, (128 - z) * s, 8), 8, "reused"
        return blocks_from_codes(codes, s, -z * s, 4), 4, "reused"
    bits = 4 if stored.bits <= 4 else 8
    return quantize_blocks(stored.to_tensor(torch.float32), bits), bits, "requantized"


# -- the arithmetic, in torch -------------------------------------------------------------------------------


def reference_quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the kernel does to x (M, K): int8 codes (M, nb * 32), scales dx and sums sx (M, nb), fp32."""
    x = x.float()
    mrows, k = x.shape
    x = F.pad(x, (0, (-k) % QK)).reshape(mrows, -1, QK)
    a = x.abs().amax(-1)  # (M, nb)
    dx = a / 127.0
    inv = torch.where(a > 0, 127.0 / a, torch.zeros_like(a))
    q = torch.round(x * inv.unsqueeze(-1))  # half to even, as the kernel's _mm256_round_ps
    sx = dx * q.sum(-1)
    return q.to(torch.int8).reshape(mrows, -1), dx, sx


def reference_gemm(
    x: torch.Tensor, blocks: torch.Tensor, bits: int, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Pure-torch y (M, N) = sum over blocks b of d_w dx dot(c, q) + m_w sx (+ bias): the kernel's math,
    with exact integer dots and float64 accumulation."""
    q, dx, sx = reference_quantize_activations(x)
    codes, d, m = decode_blocks(blocks, bits)
    mrows, n = q.shape[0], codes.shape[0]
    dots = torch.einsum("mbk,nbk->mnb", q.reshape(mrows, -1, QK).double(), codes.reshape(n, -1, QK).double())
    y = (dots * (dx.double()[:, None, :] * d.double()[None])).sum(-1) + sx.double() @ m.double().T
    if bias is not None:
        y = y + bias.double()
    return y.float()


def gemm(x: torch.Tensor, blocks: torch.Tensor, bits: int, bias: torch.Tensor | None = None) -> Any:
    """y (M, N) fp32 = x (M, K) (any float dtype) @ W^T (+ fp32 bias) through the compiled kernel (call
    :func:`require_kernel` first)."""
    return torch.ops.arrowdiff_q4avx2.gemm(x, blocks, bits, bias)


# -- fused decode-step ops (kernels/decode_ops.cpp; fp32, contiguous, CPU) ----------------------------------


def add_rms_norm(x: torch.Tensor | None, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> Any:
    """``residual += x`` in place (skipped when x is None), then RMSNorm of the sum (Zhang & Sennrich
    2019): ``residual / sqrt(mean(residual**2) + eps) * weight``, a new tensor."""
    return torch.ops.arrowdiff_q4avx2.add_rms_norm(x, residual, weight, eps)


def silu_mul(x: torch.Tensor) -> Any:
    """(..., 2F) -> (..., F): ``silu(x[..., :F]) * x[..., F:]`` (SwiGLU's gate times up)."""
    return torch.ops.arrowdiff_q4avx2.silu_mul(x)


def decode_attention(
    qkv: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    pos: int,
    n_heads: int,
    n_kv_heads: int,
) -> Any:
    """Attention of one new token per sequence at position ``pos``: qkv (B, 1, (H + 2 Hkv) hd) holds q,
    k, v heads in that order; q and k are rotated by RoPE (Su et al. 2021, rotate-half, row ``pos`` of
    the (>= pos + 1, hd) cos/sin tables), k and v are written into the (B', Hkv, L, hd) caches at ``pos``
    (B' >= B), and each query head h attends over positions 0..pos of key/value head h // (H / Hkv)
    (GQA, Ainslie et al. 2023) with softmax(q k^T / sqrt(hd)). Returns (B, 1, H hd)."""
    return torch.ops.arrowdiff_q4avx2.decode_attention(
        qkv, k_cache, v_cache, cos, sin, pos, n_heads, n_kv_heads
    )
