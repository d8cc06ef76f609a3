"""Attach a component stored in one model directory to another, copying its tensors exactly as stored.

Used to join codecs trained apart (a vocoder trained on its own) to a unified model directory without a
lossy re-quantisation of anything: every tensor keeps its bits and checksum.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from arrowdiff.errors import ConfigError
from arrowdiff.weights.model_dir import load_model_dir, save_model_dir
from arrowdiff.weights.policy import QuantPolicy
from arrowdiff.weights.requantize import COPIED_FILES


def attach_component(
    model_dir: Path, source_dir: Path, component: str, out_dir: Path, metadata_keys: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Write ``model_dir`` plus ``source_dir``'s ``component`` (and its ``metadata_keys``) to the new
    directory ``out_dir``. Returns the new metadata."""
    model_dir, source_dir, out_dir = Path(model_dir), Path(source_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"output {out_dir} already exists and is not empty; choose a new --out")
    model, source = load_model_dir(model_dir, verify=True), load_model_dir(source_dir, verify=True)
    if component not in source.components:
        raise ConfigError(f"{source_dir} has no component {component!r} (it has {sorted(source.components)})")
    missing = [k for k in metadata_keys if k not in source.metadata]
    if missing:
        raise ConfigError(f"{source_dir}/metadata.json lacks {missing}")
    comps = dict(model.components)
    comps[component] = source.components[component]
    meta = dict(model.metadata)
    meta.update({k: source.metadata[k] for k in metadata_keys})
    meta["attached"] = [
        *[a for a in meta.get("attached", []) if a.get("component") != component],
        {"component": component, "from": str(source_dir), "metadata_keys": list(metadata_keys)},
    ]
    q = model.metadata.get("quantization", {}).get("policy")
    policy = QuantPolicy.from_dict(q) if q else QuantPolicy()
    wide = max((st.bits for st in source.components[component].values() if len(st.shape) >= 2), default=16)
    policy = QuantPolicy(
        bits=policy.bits,
        group_size=policy.group_size,
        method=policy.method,
        vector_bits=policy.vector_bits,
        keep=(*policy.keep, (f"{component}/*", wide)),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for rel in dict.fromkeys((meta.get("tokenizer", "tokenizer.json"), *COPIED_FILES)):
        if (model_dir / rel).is_file():
            shutil.copyfile(model_dir / rel, out_dir / rel)
    save_model_dir(out_dir, comps, meta, policy)
    return meta


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m arrowdiff.weights.attach", description=__doc__)
    p.add_argument("model", help="model directory to extend")
    p.add_argument("source", help="model directory holding the component")
    p.add_argument("--component", required=True, help="e.g. vocoder")
    p.add_argument("--metadata-keys", default="", help="comma-separated metadata.json keys to carry over")
    p.add_argument("--out", required=True, help="new model directory")
    a = p.parse_args(argv)
    keys = tuple(k for k in a.metadata_keys.split(",") if k)
    meta = attach_component(Path(a.model), Path(a.source), a.component, Path(a.out), keys)
    print(json.dumps({"out": a.out, "components": sorted(meta.get("components", {}))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["attach_component"]
