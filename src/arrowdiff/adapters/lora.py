"""LoRA: low-rank adapters around linear layers (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large
Language Models"), in the style of huggingface/peft.

A :class:`LoRALinear` WRAPS its base layer (``base_layer``) and adds ``x A^T B^T * scaling`` with
``A`` (r, in) Kaiming-initialised, ``B`` (out, r) zero-initialised (so a fresh adapter changes nothing) and
``scaling = alpha / r``. ``merge()`` adds :meth:`delta_weight` into a dense base weight and ``unmerge()``
subtracts the same delta, so merged and unmerged outputs agree.

An :class:`Adapter` is the stored record: its name, the kind of model it belongs to ("ar" or "diffusion"),
the base model's id, the LoRA hyper-parameters and the A/B tensors keyed by module path. It is saved as an
ArrowQuant model directory with one component, ``lora`` (:func:`save_adapter` / :func:`load_adapter`).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.weights import QuantPolicy, load_model_dir, save_model_dir

ADAPTER_KINDS = ("ar", "diffusion")
ADAPTER_MODEL_TYPE = "lora_adapter"
COMPONENT = "lora"


@dataclass(frozen=True)
class LoRAConfig:
    """Rank, scale and the layers an adapter wraps."""

    r: int = 8  # rank of the update B A
    alpha: float = 16.0  # the update is scaled by alpha / r
    targets: tuple[str, ...] = ("attn.wqkv", "attn.wo")  # module-path suffixes of the wrapped linears

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"LoRAConfig.r={self.r!r} must be an integer >= 1 (4-16 is typical)")
        if not self.alpha > 0:
            raise ConfigError(f"LoRAConfig.alpha={self.alpha} must be > 0")
        if isinstance(self.targets, str) or not self.targets:
            raise ConfigError(
                f"LoRAConfig.targets={self.targets!r} must be a non-empty list of module suffixes"
            )
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


class LoRALinear(nn.Module):
    """``y = base_layer(x) + (x A^T) B^T * scaling``; ``base_layer`` is any linear-like module."""

    def __init__(self, base_layer: nn.Module, r: int, alpha: float) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = _features(base_layer)
        self.r, self.scaling = r, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as peft and nn.Linear do
        self.merged = False
        self.enabled = True

    def delta_weight(self) -> Tensor:
        """The dense update (out, in) this adapter adds to the base weight."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def merge(self) -> None:
        """Fold the update into the base weight (only for a dense nn.Linear base)."""
        if self.merged:
            return
        if not isinstance(self.base_layer, nn.Linear):
            raise ConfigError(
                f"cannot merge LoRA into a {type(self.base_layer).__name__}: its weight is quantized; "
                "keep the adapter unmerged or load the model with compute='fp32'"
            )
        with torch.no_grad():
            w = self.base_layer.weight
            w += self.delta_weight().to(w.dtype)
        self.merged = True

    def unmerge(self) -> None:
        """Subtract the update merged by :meth:`merge`."""
        if not self.merged:
            return
        with torch.no_grad():
            w = self.base_layer.weight
            w -= self.delta_weight().to(w.dtype)
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        y = self.base_layer(x)
        if self.merged or not self.enabled:
            return y
        a, b = self.lora_A.to(x.dtype), self.lora_B.to(x.dtype)
        return y + F.linear(F.linear(x, a), b) * self.scaling

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}, merged={self.merged}, enabled={self.enabled}"


def _features(m: nn.Module) -> tuple[int, int]:
    if isinstance(m, nn.Linear) or (hasattr(m, "in_features") and hasattr(m, "out_features")):
        return int(m.in_features), int(m.out_features)  # type: ignore[arg-type]
    raise ConfigError(f"LoRA wraps linear layers; got a {type(m).__name__}")


def target_paths(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Paths of the linear-like modules (not already LoRA-wrapped) whose path ends with one of ``targets``."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear) or name.endswith(".base_layer"):
            continue
        if any(name == t or name.endswith("." + t) for t in targets) and hasattr(m, "in_features"):
            out.append(name)
    return out


def inject_lora(model: nn.Module, cfg: LoRAConfig) -> dict[str, LoRALinear]:
    """Wrap every target linear of ``model`` in a fresh LoRALinear; return them by module path."""
    paths = target_paths(model, cfg.targets)
    if not paths:
        raise ConfigError(f"no module of {type(model).__name__} matches LoRA targets {cfg.targets}")
    wrapped = {}
    for path in paths:
        parent, _, attr = path.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        layer = LoRALinear(getattr(owner, attr), cfg.r, cfg.alpha)
        setattr(owner, attr, layer)
        wrapped[path] = layer
    return wrapped


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


@dataclass
class Adapter:
    """A LoRA adapter as stored: tensors ``<module path>.lora_A`` / ``.lora_B`` plus what it belongs to."""

    name: str
    kind: str  # "ar" | "diffusion": the kind of model it adapts (R17.3, R17.4)
    base_model: str  # id of the base model it was trained on
    config: LoRAConfig
    tensors: dict[str, Tensor] = field(repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ADAPTER_KINDS:
            raise ConfigError(f"adapter kind={self.kind!r} must be one of {ADAPTER_KINDS}")

    @property
    def paths(self) -> list[str]:
        return sorted({k.rsplit(".", 1)[0] for k in self.tensors})

    @classmethod
    def from_model(cls, model: nn.Module, name: str, kind: str, base_model: str, cfg: LoRAConfig) -> Adapter:
        """Capture the LoRA weights currently inside ``model``."""
        tensors = {}
        for path, layer in lora_layers(model).items():
            tensors[f"{path}.lora_A"] = layer.lora_A.detach().float().clone()
            tensors[f"{path}.lora_B"] = layer.lora_B.detach().float().clone()
        if not tensors:
            raise ConfigError("the model holds no LoRA layers; inject_lora() and train them first")
        return cls(name, kind, base_model, cfg, tensors)


def save_adapter(adapter: Adapter, out: str | os.PathLike[str]) -> Path:
    """Write ``adapter`` as a model directory (metadata.json + lora.parquet, fp32)."""
    meta = {
        "model_type": ADAPTER_MODEL_TYPE,
        "adapter": {
            "name": adapter.name,
            "kind": adapter.kind,
            "base_model": adapter.base_model,
            "lora": {**asdict(adapter.config), "targets": list(adapter.config.targets)},
        },
    }
    save_model_dir(Path(out), {COMPONENT: adapter.tensors}, meta, QuantPolicy(bits=32))
    return Path(out)


def load_adapter(path: str | os.PathLike[str]) -> Adapter:
    """Read an adapter directory written by :func:`save_adapter`."""
    stored = load_model_dir(Path(path))
    meta = stored.metadata
    if meta.get("model_type") != ADAPTER_MODEL_TYPE or "adapter" not in meta:
        raise WeightFormatError(
            f"{path}: model_type {meta.get('model_type')!r} is not a LoRA adapter directory"
        )
    a = meta["adapter"]
    return Adapter(
        a["name"], a["kind"], a["base_model"], LoRAConfig(**a["lora"]), stored.state_dict(COMPONENT)
    )
