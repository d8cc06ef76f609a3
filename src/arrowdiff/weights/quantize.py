"""ArrowQuant math: group-wise asymmetric quantization, bit packing and dequantization. Pure: no I/O.

Notation (one row of the flattened weight, one group ``g`` of ``group_size`` values):

    w        the original values, flattened to (rows, cols) by the tensor's ``grouping``:
             "rows" (format 1.1): rows = shape[0], cols = prod(shape[1:]), so a conv kernel
                                  (out, in, k) groups over in x k, not over its k taps alone;
             "last" (format 1.0): rows = prod(shape[:-1]), cols = shape[-1].
             The two agree for vectors and matrices; 1-D and 0-D tensors are one row.
    q        integer codes in [0, 2**bits - 1], packed little-endian within a byte (first code in low bits)
    s        the group's scale (fp16), the size of one quantization step
    z        the group's zero point: uint8 for "rtn", fp16 for "hqq" (a real number)
    w_hat    the dequantized value, (q - z) * s

``cols`` is padded with zeros up to a multiple of ``group_size``; the padding is recorded in ``pad`` and
cut away again by :func:`dequantize`. Bits 16 and 32 mean "store as fp16 / fp32, unquantized".
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch

from arrowdiff.errors import ConfigError

QUANT_BITS = (2, 4, 8)  # widths stored as packed integer codes
FLOAT_BITS = (16, 32)  # widths stored as raw little-endian floats
SUPPORTED_BITS = QUANT_BITS + FLOAT_BITS
METHODS = ("rtn", "hqq")
GROUPINGS = ("rows", "last")  # format 1.1's, and format 1.0's (every tensor of a 1.0 file)

if sys.byteorder != "little":  # the format is little-endian and tensors are viewed as raw bytes
    raise ImportError("arrowdiff.weights needs a little-endian machine")


@dataclass(frozen=True)
class QuantizedTensor:
    """One tensor in ArrowQuant form; exactly what one row of a component file holds."""

    packed: torch.Tensor  # (n_bytes,) uint8: packed codes, or the raw fp16/fp32 bytes for bits 16/32
    scales: torch.Tensor  # (rows, n_groups) float16; empty for bits 16/32
    zeros: torch.Tensor  # (rows, n_groups) uint8 ("rtn") or float16 ("hqq"); empty for bits 16/32
    shape: tuple[int, ...]  # the original shape
    bits: int  # 2, 4, 8 (codes) or 16, 32 (raw floats)
    group_size: int  # values per group along a row; 0 for bits 16/32
    method: str  # "rtn", "hqq", or "none" for bits 16/32
    pad: int  # zero columns appended so that cols % group_size == 0
    grouping: str = "rows"  # how the shape flattens to (rows, cols): GROUPINGS


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is a supported width, else raise ConfigError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ConfigError(f"bits={bits!r} is not supported; use one of {SUPPORTED_BITS} (16/32: unquantized)")
    return bits


def check_group_size(group_size: int) -> int:
    """Return ``group_size`` if it is a positive int, else raise ConfigError."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ConfigError(f"group_size={group_size!r} must be a positive int; 32, 64 or 128 are typical")
    return group_size


def check_method(method: str) -> str:
    """Return ``method`` if it is a known quantization method, else raise ConfigError."""
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not supported; use one of {METHODS}")
    return method


def _check_pack_bits(bits: int) -> int:
    if isinstance(bits, bool) or bits not in QUANT_BITS:
        raise ConfigError(f"bits={bits!r} cannot be packed; packing supports {QUANT_BITS}")
    return bits


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes (values < 2**bits) into bytes, little-endian: the first code in the low bits.

    Returns a 1-D uint8 tensor of ``ceil(codes.numel() * bits / 8)`` bytes; the unused high bits of the
    last byte are zero.
    """
    _check_pack_bits(bits)
    if codes.dtype != torch.uint8:
        raise ConfigError(f"pack() needs uint8 codes, got {codes.dtype}; convert with codes.to(torch.uint8)")
    flat = codes.reshape(-1)
    if flat.numel() and int(flat.max()) >= 1 << bits:
        raise ConfigError(f"a code is {int(flat.max())}, too large for {bits} bits; clamp to < {1 << bits}")
    if bits == 8:
        return flat.contiguous().clone()
    per_byte = 8 // bits
    flat = torch.nn.functional.pad(flat, (0, (-flat.numel()) % per_byte))
    lanes = flat.reshape(-1, per_byte)  # (n_bytes, per_byte)
    out = torch.zeros(lanes.shape[0], dtype=torch.uint8)
    for i in range(per_byte):
        out |= lanes[:, i] << (bits * i)
    return out


def unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack`: the first ``n`` codes (uint8, 1-D) of ``packed``."""
    _check_pack_bits(bits)
    need = math.ceil(n * bits / 8)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() < need:
        raise ConfigError(
            f"unpack() needs a 1-D uint8 tensor of >= {need} bytes for {n} codes of {bits} bits, "
            f"got {packed.dtype} with shape {tuple(packed.shape)}"
        )
    if bits == 8:
        return packed[:n]
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8)  # (per_byte,)
    codes = (packed[:need].unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # (need, per_byte)
    return codes.reshape(-1)[:n]


def rows_cols(shape: tuple[int, ...], grouping: str = "rows") -> tuple[int, int]:
    """(rows, cols) a tensor of ``shape`` is quantized as, under ``grouping`` (module docstring)."""
    if grouping not in GROUPINGS:
        raise ConfigError(f"grouping={grouping!r} is not one of {GROUPINGS}")
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    if grouping == "rows":
        return shape[0], math.prod(shape[1:])
    return math.prod(shape[:-1]), shape[-1]


def layout(
    shape: tuple[int, ...], bits: int, group_size: int, grouping: str = "rows"
) -> tuple[int, int, int]:
    """(payload bytes, number of scales/zeros, pad) implied by a shape and settings; used to check files."""
    rows, cols = rows_cols(shape, grouping)
    if bits in FLOAT_BITS:
        return rows * cols * bits // 8, 0, 0
    pad = (-cols) % group_size
    n_groups = (cols + pad) // group_size
    return math.ceil(rows * (cols + pad) * bits / 8), rows * n_groups, pad


def _fp16_at_least(x: torch.Tensor) -> torch.Tensor:
    """Round positive fp32 values to fp16, upwards, so that a step never shrinks (keeps |err| <= s/2)."""
    h = x.to(torch.float16)
    low = h.to(torch.float32) < x
    return torch.where(low, torch.nextafter(h, torch.full_like(h, math.inf)), h)


def _minmax_scale(lo: torch.Tensor, hi: torch.Tensor, qmax: int) -> torch.Tensor:
    s = (hi - lo) / qmax
    s = _fp16_at_least(torch.where(s > 0, s, torch.ones_like(s)))
    if not torch.isfinite(s).all():
        raise ConfigError(
            "a weight group spans more than fp16 scales can hold (|w| > ~1e5); keep this tensor at 16 or 32 "
            "bits with a QuantPolicy keep rule"
        )
    return s


def _rtn(g: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest with an integer zero point; the range always includes 0 (as in GPTQ)."""
    qmax = (1 << bits) - 1
    lo = g.amin(-1).clamp(max=0)  # (R, G)
    hi = g.amax(-1).clamp(min=0)
    s = _minmax_scale(lo, hi, qmax)
    z = torch.round(-lo / s.float()).clamp(0, qmax)
    q = torch.round(g / s.float().unsqueeze(-1) + z.unsqueeze(-1)).clamp(0, qmax)
    return q.to(torch.uint8), s, z.to(torch.uint8)


def _hqq(
    g: torch.Tensor, bits: int, iters: int = 20, lp_norm: float = 0.7, beta: float = 10.0, kappa: float = 1.01
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Half-Quadratic Quantization: optimise the zero point of each group, no calibration data.

    Badri & Shaji (2023), "Half-Quadratic Quantization of Large Machine Learning Models"
    (https://mobiusml.github.io/hqq_blog/). The loss ``||w - (q - z) s||_p^p`` with p < 1 (robust to
    outliers) is split with an auxiliary error ``e``; each iteration alternates a generalised soft-threshold
    for ``e`` and a closed-form mean for ``z`` while ``beta`` grows by ``kappa``. Defaults are the paper's
    (p=0.7, beta=10, kappa=1.01, 20 iterations). Two additions: we keep, per group, the zero point with the
    lowest squared error seen (the min-max start included), and then refit scale and zero by least squares
    for the chosen codes, which can only lower the squared error.
    """
    qmax = (1 << bits) - 1
    lo, hi = g.amin(-1), g.amax(-1)  # (R, G)
    s = _minmax_scale(lo, hi, qmax).float().unsqueeze(-1)  # (R, G, 1)
    z = -lo.unsqueeze(-1) / s

    def quant(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = torch.round(g / s + z).clamp(0, qmax)
        return q, ((g - (q - z) * s) ** 2).mean(-1, keepdim=True)

    q, best_err = quant(z)
    best_z = z
    for _ in range(iters):
        r = g - (q - z) * s
        e = torch.sign(r) * torch.relu(r.abs() - (1.0 / beta) * (r.abs() + 1e-8) ** (lp_norm - 1))
        z = (q - (g - e) / s).mean(-1, keepdim=True)
        beta *= kappa
        q, err = quant(z)
        better = err < best_err
        best_z, best_err = torch.where(better, z, best_z), torch.where(better, err, best_err)

    q, best_err = quant(best_z)
    # least-squares affine fit w ~ a q + b for the fixed codes: a = s, b = -z s
    qm, gm = q.mean(-1, keepdim=True), g.mean(-1, keepdim=True)
    var = ((q - qm) ** 2).mean(-1, keepdim=True)
    a = ((q - qm) * (g - gm)).mean(-1, keepdim=True) / var.clamp(min=1e-12)
    ok = (var > 0) & (a > 0)
    s_fit = torch.where(ok, a, s).to(torch.float16)
    s_fit = torch.where(torch.isfinite(s_fit) & (s_fit > 0), s_fit, s.to(torch.float16))
    z_fit = torch.where(ok, qm - gm / s_fit.float(), best_z).to(torch.float16)
    fit_err = ((g - (q - z_fit.float()) * s_fit.float()) ** 2).mean(-1, keepdim=True)
    keep_fit = torch.isfinite(z_fit) & (fit_err < best_err)
    s16 = torch.where(keep_fit, s_fit, s.to(torch.float16))
    z16 = torch.where(keep_fit, z_fit, best_z.to(torch.float16))
    if not torch.isfinite(z16).all():
        raise ConfigError("HQQ produced a zero point outside fp16 range; use method='rtn' for this tensor")
    q = torch.round(g / s16.float() + z16.float()).clamp(0, qmax)
    return q.to(torch.uint8), s16.squeeze(-1), z16.squeeze(-1)


def quantize(
    w: torch.Tensor, bits: int, group_size: int, method: str = "rtn", grouping: str = "rows"
) -> QuantizedTensor:
    """Quantize ``w`` group-wise along its flattened rows (``grouping``) to ``bits`` (2/4/8), or store it
    raw (16/32). ``grouping="last"`` writes format 1.0's layout (kept for tests and old files).

    ``method="rtn"``: round to nearest, integer zero point, guaranteed ``|w - w_hat| <= s / 2``.
    ``method="hqq"``: Half-Quadratic Quantization (Badri & Shaji 2023), lower error, fp16 zero point.
    """
    check_bits(bits)
    check_group_size(group_size)
    check_method(method)
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        kind = w.dtype if isinstance(w, torch.Tensor) else type(w).__name__
        raise ConfigError(f"quantize() needs a floating-point tensor, got {kind}; store integers elsewhere")
    shape = tuple(w.shape)
    x = w.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ConfigError(f"tensor of shape {shape} holds NaN or inf; fix the weights before saving")
    if bits in FLOAT_BITS:
        raw = x.to(torch.float16 if bits == 16 else torch.float32).contiguous()
        if raw.data_ptr() == w.data_ptr():
            raw = raw.clone()  # never alias the caller's tensor
        if not torch.isfinite(raw).all():
            raise ConfigError(f"tensor of shape {shape} overflows fp16 (|w| > 65504); store it at 32 bits")
        empty = torch.empty(0, dtype=torch.float16)
        return QuantizedTensor(
            raw.reshape(-1).view(torch.uint8), empty, empty.to(torch.uint8), shape, bits, 0, "none", 0
        )
    rows, cols = rows_cols(shape, grouping)
    _, _, pad = layout(shape, bits, group_size, grouping)
    x = torch.nn.functional.pad(x.reshape(rows, cols), (0, pad))  # (R, C + pad)
    g = x.reshape(rows, (cols + pad) // group_size, group_size)  # (R, G, group_size)
    q, s, z = (_rtn if method == "rtn" else _hqq)(g, bits)
    return QuantizedTensor(pack(q, bits), s, z, shape, bits, group_size, method, pad, grouping)


def dequantize(q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Reconstruct ``w_hat = (q - z) * s`` in the original shape, as a new tensor of ``dtype``."""
    check_bits(q.bits)
    if q.bits in FLOAT_BITS:
        raw = q.packed.view(torch.float16 if q.bits == 16 else torch.float32)
        return raw.to(dtype, copy=True).reshape(q.shape)
    rows, cols = rows_cols(q.shape, q.grouping)
    n = rows * (cols + q.pad)
    codes = unpack(q.packed, q.bits, n).reshape(rows, (cols + q.pad) // q.group_size, q.group_size).float()
    w = (codes - q.zeros.float().unsqueeze(-1)) * q.scales.float().unsqueeze(-1)
    return w.reshape(rows, cols + q.pad)[:, :cols].to(dtype).reshape(q.shape)
