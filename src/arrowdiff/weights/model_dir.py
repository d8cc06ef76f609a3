"""Model directories: ``metadata.json`` + one ArrowQuant Parquet file per component (FORMAT.md section 2)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.weights.parquet import (
    FORMAT_VERSION,
    SUPPORTED_FORMAT_VERSIONS,
    StoredTensor,
    read_component,
    write_atomically,
    write_component,
)
from arrowdiff.weights.policy import QuantPolicy

METADATA_FILE = "metadata.json"
MODEL_TYPE = "unified_diffusion"
REQUIRED_KEYS = ("format_version", "model_type", "components", "quantization")
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


def component_file(component: str) -> str:
    """The relative file of a component: ``"heads/text"`` -> ``"heads/text.parquet"``."""
    if not isinstance(component, str) or not _COMPONENT.fullmatch(component) or ".." in component:
        raise ConfigError(
            f"component name {component!r} is not allowed; use letters, digits, '_', '-', '.' and '/' "
            "between parts, e.g. 'backbone' or 'heads/text'"
        )
    return f"{component}.parquet"


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{path}: metadata is not JSON-serialisable ({e}); pass plain dicts/lists/str/numbers"
        ) from e
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def whole_source_file(tensors: Mapping[str, Any]) -> Path | None:
    """The component file ``tensors`` were all read from, when they are exactly its tensors in its order
    (a component carried over unchanged), else None."""
    files = {t.file for t in tensors.values() if isinstance(t, StoredTensor)}
    if len(files) != 1 or not all(isinstance(t, StoredTensor) for t in tensors.values()):
        return None
    (source,) = files
    stored = read_component(source)
    same = list(stored) == list(tensors) and all(stored[k].sha256 == t.sha256 for k, t in tensors.items())
    return source if same else None


def copy_component(source: Path, path: Path) -> None:
    """Copy a component file byte for byte (it keeps its own format version), atomically."""
    write_atomically(path, lambda tmp: shutil.copyfile(source, tmp))


def save_model_dir(
    dir: Path,
    components: Mapping[str, Mapping[str, torch.Tensor]],
    metadata: dict[str, Any],
    policy: QuantPolicy,
) -> None:
    """Write every component file, then ``metadata.json`` last (so a crash never leaves a valid-looking dir).

    ``metadata`` is the caller's (config, training provenance, ...); ``format_version``, ``components`` and
    ``quantization`` are filled in here, and ``model_type`` defaults to ``"unified_diffusion"``. A component
    given as all the tensors of one existing file, unchanged, is copied byte for byte (verified first).
    """
    dir = Path(dir)
    if not isinstance(metadata, dict):
        raise ConfigError(f"metadata must be a dict, got {type(metadata).__name__}")
    files = {name: component_file(name) for name in components}
    dir.mkdir(parents=True, exist_ok=True)
    for name, tensors in components.items():
        (dir / files[name]).parent.mkdir(parents=True, exist_ok=True)
        source = whole_source_file(tensors)
        if source is not None and source.resolve() != (dir / files[name]).resolve():
            for t in tensors.values():
                t.verify()
            copy_component(source, dir / files[name])
        else:
            write_component(dir / files[name], tensors, policy.for_component(name))
    meta = dict(metadata)
    meta["format_version"] = FORMAT_VERSION
    meta.setdefault("model_type", MODEL_TYPE)
    meta["components"] = files
    meta["quantization"] = {
        "method": policy.method,
        "bit_width": policy.bits,
        "group_size": policy.group_size,
        "policy": policy.to_dict(),
    }
    _write_json_atomic(dir / METADATA_FILE, meta)


def read_metadata(dir: Path) -> dict[str, Any]:
    """Read and check ``metadata.json`` (required keys, format version, component paths)."""
    path = Path(dir) / METADATA_FILE
    if not path.is_file():
        raise WeightFormatError(
            f"{path}: missing; {dir} is not an arrowdiff model directory (save one with save_model_dir)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightFormatError(f"{path}: not valid JSON ({e}); restore or re-export the model") from e
    if not isinstance(meta, dict):
        raise WeightFormatError(f"{path}: top level must be a JSON object; restore or re-export the model")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise WeightFormatError(f"{path}: required keys {missing} missing (FORMAT.md section 2); re-export")
    if meta["format_version"] not in SUPPORTED_FORMAT_VERSIONS:
        raise WeightFormatError(
            f"{path}: format_version {meta['format_version']!r} is not one this arrowdiff reads "
            f"{SUPPORTED_FORMAT_VERSIONS}; upgrade arrowdiff or re-export the model"
        )
    comps = meta["components"]
    if not isinstance(comps, dict) or not all(isinstance(v, str) for v in comps.values()):
        raise WeightFormatError(f"{path}: 'components' must map names to relative file paths")
    for name, rel in comps.items():
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts or p.suffix != ".parquet":
            raise WeightFormatError(
                f"{path}: component {name!r} points to {rel!r}; it must be a relative '.parquet' path inside "
                "the model directory"
            )
    return meta


@dataclass
class LoadedModel:
    """A model directory opened lazily: tensors stay in the memory-mapped files until asked for."""

    dir: Path
    metadata: dict[str, Any]
    components: dict[str, dict[str, StoredTensor]]

    def file(self, component: str) -> Path:
        """The Parquet file holding ``component``."""
        self._check(component)
        return self.dir / self.metadata["components"][component]

    def _check(self, component: str) -> None:
        if component not in self.components:
            raise ConfigError(f"no component {component!r}; this model has {sorted(self.components)}")

    def state_dict(self, component: str, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Dequantize every tensor of ``component`` into new tensors of ``dtype``."""
        self._check(component)
        return {name: st.to_tensor(dtype) for name, st in self.components[component].items()}

    def load_into(self, module: torch.nn.Module, component: str) -> None:
        """Strictly copy ``component``'s tensors into ``module`` (see :func:`load_into`)."""
        self._check(component)
        load_into(module, self.components[component], component, self.file(component))


def load_model_dir(dir: Path, verify: bool = False) -> LoadedModel:
    """Open a model directory; ``verify=True`` checks every tensor's checksum now instead of on first use."""
    dir = Path(dir)
    if not dir.is_dir():
        raise WeightFormatError(f"{dir}: model directory not found; check the path")
    meta = read_metadata(dir)
    comps = {name: read_component(dir / rel, verify=verify) for name, rel in meta["components"].items()}
    return LoadedModel(dir, meta, comps)


def load_into(
    module: torch.nn.Module,
    stored: Mapping[str, StoredTensor],
    component: str,
    file: Path,
    dtype: torch.dtype | None = None,
) -> None:
    """Copy ``stored`` into ``module``'s parameters and buffers strictly: same keys both sides, same shapes.

    Raises WeightFormatError listing missing keys, unexpected keys and shape mismatches, naming the file.
    Tensors are dequantized in ``dtype`` (default: each destination's dtype) and copied into place.
    """
    target = module.state_dict()
    missing = [k for k in target if k not in stored]
    unexpected = [k for k in stored if k not in target]
    mismatched = [
        f"{k}: file {list(stored[k].shape)} vs module {list(target[k].shape)}"
        for k in target
        if k in stored and tuple(stored[k].shape) != tuple(target[k].shape)
    ]
    if missing or unexpected or mismatched:
        found = (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        parts = [f"{label} {items}" for label, items in found if items]
        raise WeightFormatError(
            f"{file}: component {component!r} does not fit {type(module).__name__}: {'; '.join(parts)}; "
            "load the checkpoint saved from the same model config, or re-export it"
        )
    with torch.no_grad():
        for k, dst in target.items():
            dst.copy_(stored[k].to_tensor(dtype or dst.dtype))
