"""Load a model directory (metadata.json + Parquet components + tokenizer.json) into a UnifiedModel.

The metadata configures everything (R15.7): the architecture, the heads, the schedule, the context.
Loading is strict: a missing, unexpected or mis-shaped tensor raises WeightFormatError naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from arrowdiff.config import ModelConfig
from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.network.model import UnifiedModel
from arrowdiff.tokenizer import TextTokenizer
from arrowdiff.weights import QuantLinear, StoredTensor, load_into, load_model_dir

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
DEFAULT_MODEL = "default"
COMPUTE = ("fp32", "bf16", "int8")  # how the backbone's linear layers compute (QuantLinear forms)


@dataclass
class LoadedModel:
    model: UnifiedModel
    tokenizer: TextTokenizer
    metadata: dict[str, Any]
    path: Path

    @property
    def context_length(self) -> int:
        return int(self.metadata.get("context_length") or 256)


def resolve_model_path(path: str | os.PathLike[str] | None) -> Path:
    """None -> $ARROWDIFF_MODEL or the shipped default; a bare name -> a shipped model of that name."""
    if path is None:
        path = os.environ.get("ARROWDIFF_MODEL") or PRETRAINED_DIR / DEFAULT_MODEL
    p = Path(path)
    if not p.exists() and (PRETRAINED_DIR / str(path)).exists():
        p = PRETRAINED_DIR / str(path)
    if not p.is_dir():
        shipped = (
            sorted(d.name for d in PRETRAINED_DIR.iterdir() if d.is_dir()) if PRETRAINED_DIR.exists() else []
        )
        raise WeightFormatError(
            f"model directory {str(path)!r} not found; shipped models: {shipped or 'none'}"
        )
    return p


def _swap_linears(module: torch.nn.Module, stored: dict[str, StoredTensor], compute: str) -> set[str]:
    """Replace every nn.Linear in ``module`` by a lazy QuantLinear over its stored weight (and bias);
    return the state-dict keys now held by the QuantLinears."""
    used: set[str] = set()
    for name, child in list(module.named_modules()):
        w = stored.get(f"{name}.weight")
        if not isinstance(child, torch.nn.Linear) or w is None:
            continue  # a missing weight is reported by load_into
        if tuple(w.shape) != tuple(child.weight.shape):
            raise WeightFormatError(
                f"{w.file}: {w.name!r} has shape {list(w.shape)}, the model expects "
                f"{list(child.weight.shape)}; load the checkpoint saved from the same model config"
            )
        bias = stored.get(f"{name}.bias") if child.bias is not None else None
        parent, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent), attr, QuantLinear(w, bias, compute))
        used |= {f"{name}.weight", f"{name}.bias"} if bias is not None else {f"{name}.weight"}
    return used


def load_model(
    path: str | os.PathLike[str] | None = None,
    dtype: torch.dtype = torch.float32,
    compute: str = "fp32",
) -> LoadedModel:
    """Build the model its metadata.json describes and fill it from the Parquet components.

    ``compute="fp32"`` (default) dequantizes every weight into ordinary fp32 modules. ``"bf16"`` and
    ``"int8"`` (W8A8 through torch._int_mm) instead make the backbone's linear layers QuantLinears over
    the stored weights, converted on first use; the rest (embeddings, norms, heads) loads as usual.
    """
    if compute not in COMPUTE:
        raise ConfigError(f"compute={compute!r} is not supported; use one of {COMPUTE}")
    p = resolve_model_path(path)
    stored = load_model_dir(p)
    meta = stored.metadata
    if "model_config" not in meta:
        raise WeightFormatError(
            f"{p / 'metadata.json'} has no 'model_config': not an arrowdiff model directory"
        )
    cfg = ModelConfig.from_dict(meta["model_config"])
    model = UnifiedModel(cfg)
    expected = model.components()
    missing = sorted(set(expected) - set(stored.components))
    if missing:
        raise WeightFormatError(f"{p}: components {missing} are missing from metadata.json 'components'")
    for name, module in expected.items():
        tensors = stored.components[name]
        if compute != "fp32" and name == "backbone":
            used = _swap_linears(module, tensors, compute)
            tensors = {k: v for k, v in tensors.items() if k not in used}
        load_into(module, tensors, name, p / meta["components"][name], dtype=dtype)
    tok = TextTokenizer.from_file(p / meta.get("tokenizer", "tokenizer.json"))
    if tok.vocab_size != cfg.text.vocab_size:
        raise WeightFormatError(
            f"{p}: tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {cfg.text.vocab_size}"
        )
    return LoadedModel(model.to(dtype).eval(), tok, meta, p)
