"""Convert a LLaMA-architecture GGUF (llama.cpp's file format) into an arrowdiff model directory.

    python -m arrowdiff.ar.gguf_convert PATH.gguf --bits 4 --out DIR     (or: arrowdiff convert-gguf ...)

What happens to the tensors:
- GGUF names map onto :class:`arrowdiff.ar.llama.LlamaModel`'s; q/k/v are concatenated into ``wqkv`` and
  gate/up into ``w13``. llama.cpp's converter permutes the rows of Q and K so that RoPE rotates adjacent
  pairs; the inverse permutation (as in transformers' GGUF loader) restores the rotate-half layout.
- ``--bits 4``: Q4_1 blocks (32 values, fp16 scale ``d`` and min ``m``: w = q d + m) are carried over
  WITHOUT requantization as ArrowQuant 4-bit groups of 32 with s = d and a real zero point z = -m / d
  (the ``hqq`` layout, fp16 zeros): w_hat = (q - z) s, off by at most 0.5% of a quantization step.
  Q8_0 blocks (the token embedding) become 8-bit groups of 32 with z = 128, exactly.
- ``--bits 8``: matrices are dequantized and stored at 8 bits (round to nearest, groups of 32).
- Other tensor types are dequantized with ``gguf.quants.dequantize`` and stored as the policy says.
The tokenizer is rebuilt from the GGUF metadata (:mod:`arrowdiff.ar.gguf_tokenizer`).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from arrowdiff.ar.gguf_tokenizer import tokenizer_from_gguf_fields
from arrowdiff.ar.llama import LlamaConfig
from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.weights import QuantizedTensor, QuantPolicy, pack, save_model_dir

MODEL_TYPE = "llama_ar"
COMPONENT = "llama"
TensorLike = torch.Tensor | QuantizedTensor


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def llama_config_from_gguf(reader: Any) -> LlamaConfig:
    """The architecture from ``llama.*`` metadata; an untied output exists iff ``output.weight`` does."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise WeightFormatError(f"GGUF architecture {arch!r} is not supported; only 'llama' is")
    names = {t.name for t in reader.tensors}
    vocab = _field(reader, "llama.vocab_size") or len(_field(reader, "tokenizer.ggml.tokens"))
    return LlamaConfig(
        vocab_size=int(vocab),
        dim=int(_field(reader, "llama.embedding_length")),
        n_layers=int(_field(reader, "llama.block_count")),
        n_heads=int(_field(reader, "llama.attention.head_count")),
        n_kv_heads=int(
            _field(reader, "llama.attention.head_count_kv", _field(reader, "llama.attention.head_count"))
        ),
        hidden_dim=int(_field(reader, "llama.feed_forward_length")),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        max_seq_len=int(_field(reader, "llama.context_length", 2048)),
        tie_embeddings="output.weight" not in names,
        bos_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_id=_field(reader, "tokenizer.ggml.eos_token_id"),
    )


def rope_row_order(rows: int, n_head: int) -> torch.Tensor:
    """Row index map undoing llama.cpp's Q/K permutation: ``w_hf = w_gguf[order]``."""
    half = rows // n_head // 2
    return torch.arange(rows).reshape(n_head, half, 2).transpose(1, 2).reshape(rows)


def q4_1_blocks(raw: np.ndarray, shape: tuple[int, int]) -> QuantizedTensor:
    """Q4_1 rows (rows, n_blocks * 20 bytes: fp16 d, fp16 m, 16 bytes of nibbles) -> 4-bit groups of 32."""
    rows, cols = shape
    blk = np.ascontiguousarray(raw).reshape(rows, cols // 32, 20)
    d = blk[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)  # (rows, n_blocks)
    m = blk[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    qs = blk[..., 4:20]
    codes = np.concatenate([qs & 0xF, qs >> 4], axis=-1).reshape(rows, cols)  # low nibbles first
    flat = d == 0  # a constant block: w = m everywhere
    s = np.where(flat, 1.0, d)
    z = np.where(flat, -m, -m / s)
    if not np.isfinite(z.astype(np.float16)).all():
        raise WeightFormatError("Q4_1 block zero point overflows fp16; convert this file with --bits 8")
    return QuantizedTensor(
        pack(torch.from_numpy(codes.astype(np.uint8)).reshape(-1), 4),
        torch.from_numpy(s.astype(np.float16)),
        torch.from_numpy(z.astype(np.float16)),
        (rows, cols),
        4,
        32,
        "hqq",
        0,
    )


def q8_0_blocks(raw: np.ndarray, shape: tuple[int, int]) -> QuantizedTensor:
    """Q8_0 rows (rows, n_blocks * 34 bytes: fp16 d, 32 int8) -> 8-bit groups of 32, code q + 128, z = 128."""
    rows, cols = shape
    blk = np.ascontiguousarray(raw).reshape(rows, cols // 32, 34)
    d = blk[..., 0:2].copy().view(np.float16)[..., 0]
    q = blk[..., 2:34].copy().view(np.int8).reshape(rows, cols).astype(np.int16) + 128
    return QuantizedTensor(
        torch.from_numpy(q.astype(np.uint8)).reshape(-1),
        torch.from_numpy(d.copy()),
        torch.full(d.shape, 128, dtype=torch.uint8),
        (rows, cols),
        8,
        32,
        "rtn",
        0,
    )


def _permute_rows(t: TensorLike, order: torch.Tensor) -> TensorLike:
    if isinstance(t, torch.Tensor):
        return t[order]
    rows, cols = t.shape
    per_row = cols * t.bits // 8  # whole bytes per row for these layouts (cols % 32 == 0)
    packed = t.packed.reshape(rows, per_row)[order].reshape(-1)
    return QuantizedTensor(
        packed, t.scales[order], t.zeros[order], t.shape, t.bits, t.group_size, t.method, 0
    )


def _cat_rows(parts: list[TensorLike]) -> TensorLike:
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(parts)  # type: ignore[arg-type]
    if (
        not all(isinstance(p, QuantizedTensor) for p in parts)
        or len({(p.bits, p.method) for p in parts}) != 1
    ):
        parts = [_as_float(p) for p in parts]
        return torch.cat(parts)  # type: ignore[arg-type]
    q0 = parts[0]
    rows = sum(p.shape[0] for p in parts)
    return QuantizedTensor(
        torch.cat([p.packed for p in parts]),
        torch.cat([p.scales for p in parts]),
        torch.cat([p.zeros for p in parts]),
        (rows, q0.shape[1]),
        q0.bits,
        q0.group_size,
        q0.method,
        0,
    )


def _as_float(t: TensorLike) -> torch.Tensor:
    from arrowdiff.weights import dequantize

    return t if isinstance(t, torch.Tensor) else dequantize(t)


def read_tensor(t: Any, bits: int) -> TensorLike:
    """One GGUF tensor as ours: Q4_1 (``bits=4``) and Q8_0 blocks carried over, anything else fp32."""
    import gguf

    shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # GGUF lists ne0 (columns) first
    kind = t.tensor_type
    if len(shape) == 2 and kind == gguf.GGMLQuantizationType.Q8_0:
        return q8_0_blocks(t.data, shape)  # type: ignore[arg-type]
    if len(shape) == 2 and kind == gguf.GGMLQuantizationType.Q4_1 and bits == 4:
        return q4_1_blocks(t.data, shape)  # type: ignore[arg-type]
    w = gguf.quants.dequantize(t.data, kind)
    return torch.from_numpy(np.array(w, dtype=np.float32, copy=True)).reshape(shape)


def gguf_state_dict(
    reader: Any, cfg: LlamaConfig, bits: int, progress: bool = False
) -> dict[str, TensorLike]:
    """Our state dict (names of LlamaModel) from the GGUF's tensors."""
    src = {t.name: t for t in reader.tensors}
    bar = tqdm(total=len(src), desc="convert", unit="tensor", disable=not progress)

    def get(name: str) -> TensorLike:
        if name not in src:
            raise WeightFormatError(f"GGUF tensor {name!r} is missing; is this a LLaMA-architecture file?")
        bar.update(1)
        return read_tensor(src[name], bits)

    sd: dict[str, TensorLike] = {"tok_embeddings.weight": get("token_embd.weight")}
    hd = cfg.head_dim
    for i in range(cfg.n_layers):
        p, b = f"layers.{i}.", f"blk.{i}."
        q = _permute_rows(get(b + "attn_q.weight"), rope_row_order(cfg.n_heads * hd, cfg.n_heads))
        k = _permute_rows(get(b + "attn_k.weight"), rope_row_order(cfg.n_kv_heads * hd, cfg.n_kv_heads))
        sd[p + "attn_norm.weight"] = get(b + "attn_norm.weight")
        sd[p + "attn.wqkv.weight"] = _cat_rows([q, k, get(b + "attn_v.weight")])
        sd[p + "attn.wo.weight"] = get(b + "attn_output.weight")
        sd[p + "mlp_norm.weight"] = get(b + "ffn_norm.weight")
        sd[p + "mlp.w13.weight"] = _cat_rows([get(b + "ffn_gate.weight"), get(b + "ffn_up.weight")])
        sd[p + "mlp.w2.weight"] = get(b + "ffn_down.weight")
    sd["norm.weight"] = get("output_norm.weight")
    if not cfg.tie_embeddings:
        sd["output.weight"] = get("output.weight")
    bar.close()
    return sd


def convert_gguf(path: Path, out: Path, bits: int = 4, progress: bool = False) -> dict[str, Any]:
    """Write ``out`` (metadata.json, llama.parquet, tokenizer.json) from the GGUF at ``path``."""
    import gguf

    if bits not in (4, 8):
        raise ConfigError(f"--bits {bits} is not supported for GGUF conversion; use 4 or 8")
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise WeightFormatError(f"{path}: GGUF file not found")
    if (out / "metadata.json").exists():
        raise ConfigError(f"{out} already holds a model; pass a new --out directory")
    reader = gguf.GGUFReader(path)
    cfg = llama_config_from_gguf(reader)
    tok_fields = {k: _field(reader, k) for k in reader.fields if k.startswith("tokenizer.ggml.")}
    tokenizer = tokenizer_from_gguf_fields(tok_fields)
    sd = gguf_state_dict(reader, cfg, bits, progress)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = {
        "model_type": MODEL_TYPE,
        "llama_config": cfg.to_dict(),
        "tokenizer": "tokenizer.json",
        "context_length": cfg.max_seq_len,
        "source": {
            "format": "gguf",
            "file": path.name,
            "sha256": digest,
            "name": _field(reader, "general.name"),
            "license": _field(reader, "general.license"),
            "file_type": _field(reader, "general.file_type"),
        },
        "training": {"command": f"arrowdiff convert-gguf {path.name} --bits {bits}", "note": "pretrained"},
        "chat_template": _field(reader, "tokenizer.chat_template"),
    }
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    save_model_dir(out, {COMPONENT: sd}, meta, QuantPolicy(bits=bits, group_size=32))  # type: ignore[dict-item]
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="arrowdiff convert-gguf", description=__doc__.split("\n\n")[0])
    p.add_argument("gguf", type=Path, help="path of a LLaMA-architecture .gguf file")
    p.add_argument("--bits", type=int, default=4, help="4 (carry Q4_1 blocks over) or 8")
    p.add_argument("--out", type=Path, required=True, help="new model directory")
    args = p.parse_args(argv)
    convert_gguf(args.gguf, args.out, args.bits, progress=sys.stderr.isatty())
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
