"""QuantLinear: a linear layer over a stored ArrowQuant weight, converted once into a CPU compute form.

Why several forms (DESIGN.md, "CPU speed here"): unpacking INT4/INT2 codes on every call costs 40-50x a
fused kernel, so the stored codes are converted ONCE, on first forward (or :meth:`materialize`), into

    "fp32"      dequantized fp32 weight, F.linear
    "bf16"      dequantized bf16 weight, F.linear on bf16 activations (fastest dense form on this CPU)
    "int8"      W8A8: per-output-channel symmetric int8 weight, per-token dynamic int8 activations,
                torch._int_mm (LLM.int8()/SmoothQuant-style absmax quantization, Dettmers et al. 2022;
                Xiao et al. 2023) -- best for many-token diffusion passes
    "int4pack"  torch's tinygemm-style packed INT4 kernel with bf16 activations; the stored zero point and
                scale map exactly onto the kernel's (scale, zero) pairs, 2-bit codes are offset to 6..9
                so that the kernel's centred form keeps small multipliers -- best for one-token decode on
                CPUs with native bf16
    "int8dyn"   fbgemm's dynamic-quantised linear: per-output-channel int8 weight prepacked once, fp32
                activations quantised per call (Jacob et al. 2018; PyTorch dynamic quantization) -- the
                fast one-token form on AVX2-only CPUs, where bf16 and torch._int_mm are slow
    "q4avx2"    llama.cpp-style blocks of 32 (4-bit codes with fp16 scale and min, or 8-bit ones for 8-bit
                tensors) times int8 activation blocks, in our own AVX2 kernel compiled on first use
                (:mod:`arrowdiff.weights.q4avx2`; algorithm: llama.cpp's Q4_1 x Q8_1) -- the fastest
                one-token form on AVX2 CPUs; stored 2/4/8-bit codes with groups of 32k are kept exactly

Notation: x (..., K) activations, W (N, K) weight, y (..., N).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from arrowdiff.errors import ConfigError
from arrowdiff.weights import q4avx2
from arrowdiff.weights.parquet import StoredTensor
from arrowdiff.weights.quantize import unpack

COMPUTE_FORMS = ("fp32", "bf16", "int8", "int4pack", "int8dyn", "q4avx2")
INT4PACK_GROUP_SIZES = (32, 64, 128, 256)
_INNER_K_TILES = 2


def _absmax_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: x ~ q * s with q in [-127, 127]; s is (rows, 1) fp32."""
    s = x.abs().amax(-1, keepdim=True).clamp(min=1e-12) / 127.0
    return torch.round(x / s).clamp(-127, 127).to(torch.int8), s


def fbgemm_pack(w: torch.Tensor) -> object:
    """Prepack an (N, K) float weight for ``torch.ops.quantized.linear_dynamic`` with symmetric
    per-output-channel int8 scales."""
    import warnings

    w = w.float().contiguous()
    scale = (w.abs().amax(1) / 127.0).clamp(min=1e-8).double()
    with warnings.catch_warnings():  # quantized tensor creation warns of a future deprecation
        warnings.simplefilter("ignore", UserWarning)
        try:
            wq = torch.quantize_per_channel(
                w, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8
            )
            return torch.ops.quantized.linear_prepack(wq, None)
        except (RuntimeError, AttributeError) as e:
            raise ConfigError(
                f"compute='int8dyn' needs torch's quantized CPU engine (fbgemm/x86), unavailable here ({e}); "
                "use 'int4pack' or 'bf16'"
            ) from e


def int4pack_weight(stored: StoredTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert a stored 2- or 4-bit weight (N, K) into the int4pack kernel's packed weight and
    (K / group_size, N, 2) bf16 scale-and-zero tensor. The kernel computes w = (c - 8) * s + zero with
    c in 0..15; ours is w = (q - z) * s, so c = q + offset and zero = (8 - offset - z) * s."""
    q = stored.quantized()
    n, k = stored.shape
    if q.bits not in (2, 4) or q.group_size not in INT4PACK_GROUP_SIZES or q.pad or k % (16 * _INNER_K_TILES):
        raise ConfigError(
            f"{stored.file}: tensor {stored.name!r} (bits={q.bits}, group_size={q.group_size}, shape "
            f"{list(stored.shape)}) cannot use compute='int4pack'; it needs 2 or 4 bits, group_size in "
            f"{INT4PACK_GROUP_SIZES} and in_features a multiple of {16 * _INNER_K_TILES}; use 'bf16'/'int8'"
        )
    stored.verify()
    offset = 6 if q.bits == 2 else 0  # 2-bit codes 0..3 -> 6..9: small (c - 8) multipliers in bf16
    codes = unpack(q.packed, q.bits, n * k).reshape(n, k).to(torch.int32) + offset  # (N, K)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, _INNER_K_TILES)
    s = q.scales.float()  # (N, K / group_size)
    zero = (8 - offset - q.zeros.float()) * s
    scale_zero = torch.stack([s, zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return packed, scale_zero  # packed int4 weight, (K / group_size, N, 2)


class QuantLinear(torch.nn.Module):
    """``y = x W^T + b`` with W held as a :class:`StoredTensor` until the first forward."""

    def __init__(
        self, weight: StoredTensor, bias: torch.Tensor | StoredTensor | None = None, compute: str = "bf16"
    ) -> None:
        super().__init__()
        if compute not in COMPUTE_FORMS:
            raise ConfigError(f"compute={compute!r} is not supported; use one of {COMPUTE_FORMS}")
        if len(weight.shape) != 2:
            raise ConfigError(
                f"{weight.file}: tensor {weight.name!r} has shape {list(weight.shape)}, need 2-D"
            )
        self.stored = weight
        self.compute = compute
        self.out_features, self.in_features = weight.shape
        self._bias_source = bias
        # filled by materialize(); buffers so that .to() moves them, non-persistent so state_dict stays empty
        for name in ("w", "w_scale", "scale_zero", "b"):
            self.register_buffer(name, None, persistent=False)
        self.packed: object = None  # int8dyn: fbgemm's prepacked weight
        self.block_bits = 0  # q4avx2: 4 or 8, the width of the kernel's weight blocks

    @property
    def materialized(self) -> bool:
        return self.w is not None

    def materialize(self) -> None:
        """Convert the stored weight into the compute form now (done once; forward calls it if needed)."""
        if self.materialized:
            return
        bias = self._bias_source
        if isinstance(bias, StoredTensor):
            bias = bias.to_tensor(torch.float32)
        if bias is not None:
            if tuple(bias.shape) != (self.out_features,):
                raise ConfigError(
                    f"bias shape {list(bias.shape)} does not match out_features {self.out_features}"
                )
            self.b = bias.detach().to(
                torch.bfloat16 if self.compute in ("bf16", "int4pack") else torch.float32
            )
        if self.compute == "int4pack":
            self.w, self.scale_zero = int4pack_weight(self.stored)
            return
        if self.compute == "q4avx2":
            q4avx2.require_kernel()
            self.w, self.block_bits, _ = q4avx2.weight_blocks(self.stored)  # (N, blocks * bytes) uint8
            return
        if self.compute == "int8dyn":
            self.packed = fbgemm_pack(self.stored.to_tensor(torch.float32))
            self.w = torch.empty(0)  # marks the layer materialized; the weight lives in ``packed``
            return
        if self.compute == "int8":
            w = self.stored.to_tensor(torch.float32)
            self.w, self.w_scale = _absmax_int8(w)  # (N, K) int8, (N, 1)
            self.w_scale = self.w_scale.reshape(1, -1)  # (1, N)
            return
        self.w = self.stored.to_tensor(torch.bfloat16 if self.compute == "bf16" else torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (..., K) -> (..., N)
        if self.compute == "q4avx2":  # first and lean: decode calls it ~120 times per token
            w = self.w
            if w is None:
                self.materialize()
                w = self.w
            if x.shape[-1] != self.in_features:
                raise ConfigError(f"input has {x.shape[-1]} features, this layer takes {self.in_features}")
            y = q4avx2.gemm(x.reshape(-1, self.in_features), w, self.block_bits, self.b)  # bias inside
            y = y.view(*x.shape[:-1], self.out_features)
            return y if x.dtype == torch.float32 else y.to(x.dtype)
        self.materialize()
        lead, dtype = x.shape[:-1], x.dtype
        if self.compute in ("fp32", "bf16"):
            y = F.linear(x.to(self.w.dtype), self.w, self.b)
            return y.to(dtype)
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if self.compute == "int8dyn":
            y = torch.ops.quantized.linear_dynamic(x2.float().contiguous(), self.packed, True)
        elif self.compute == "int8":
            xq, xs = _absmax_int8(x2.float())  # (M, K) int8, (M, 1)
            y = torch._int_mm(xq, self.w.t()).float() * xs * self.w_scale  # (M, N)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                x2.to(torch.bfloat16), self.w, self.stored.group_size, self.scale_zero
            )
        if self.b is not None:
            y = y + self.b
        return y.to(dtype).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        s = self.stored
        return f"{self.in_features}, {self.out_features}, bits={s.bits}, compute={self.compute!r}, {s.name!r}"
