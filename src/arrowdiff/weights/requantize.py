"""Re-quantize a model directory with another QuantPolicy (``arrowdiff quantize``).

Every tensor is dequantized from the source file and stored again as the policy says; a tensor whose
stored form already is what the policy asks for (same bits, group size and method, e.g. embeddings kept
at 8 bits) is copied verbatim, so it is not rounded a second time.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from arrowdiff.errors import ConfigError
from arrowdiff.weights.model_dir import METADATA_FILE, load_model_dir, save_model_dir
from arrowdiff.weights.parquet import StoredTensor
from arrowdiff.weights.policy import QuantPolicy
from arrowdiff.weights.quantize import FLOAT_BITS

COPIED_FILES = ("tokenizer.json", "training_log.jsonl")  # copied along when present


def _unchanged(st: StoredTensor, bits: int, policy: QuantPolicy) -> bool:
    """True if storing ``st`` at ``bits`` under ``policy`` would reproduce its stored form."""
    if st.bits != bits:
        return False
    return bits in FLOAT_BITS or (st.group_size, st.method) == (policy.group_size, policy.method)


class _Requantized(Mapping[str, "torch.Tensor | StoredTensor"]):
    """A component's tensors, converted one at a time as the writer asks for them (ticks ``bar``)."""

    def __init__(self, stored: dict[str, StoredTensor], policy: QuantPolicy, bar: tqdm) -> None:
        self.stored, self.policy, self.bar = stored, policy, bar

    def __getitem__(self, name: str) -> torch.Tensor | StoredTensor:
        st = self.stored[name]
        bits = self.policy.bits_for(name, torch.empty(st.shape, device="meta"))
        self.bar.update(1)
        return st if _unchanged(st, bits, self.policy) else st.to_tensor()

    def __iter__(self) -> Iterator[str]:
        return iter(self.stored)

    def __len__(self) -> int:
        return len(self.stored)


def requantize_model_dir(src: Path, dst: Path, policy: QuantPolicy, progress: bool = False) -> dict[str, Any]:
    """Write the model in ``src`` to the new directory ``dst``, re-quantized with ``policy``.

    ``metadata.json`` keeps the source's keys, gets the new ``quantization`` block and a ``quantized_from``
    entry (source path and settings); ``tokenizer.json`` and ``training_log.jsonl`` are copied.
    Returns the new metadata. ``dst`` must not exist or be empty.
    """
    src, dst = Path(src), Path(dst)
    if not isinstance(policy, QuantPolicy):
        raise ConfigError(f"policy must be a QuantPolicy, got {type(policy).__name__}")
    stored = load_model_dir(src, verify=True)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConfigError(f"output {dst} already exists and is not an empty directory; choose a new --out")
    meta = dict(stored.metadata)
    source_q = meta.get("quantization", {})
    meta["quantized_from"] = {
        "path": str(src.resolve()),
        **{k: source_q.get(k) for k in ("method", "bit_width", "group_size")},
    }
    if "quantized_from" in stored.metadata:  # keep the chain of conversions
        meta["quantized_from"]["quantized_from"] = stored.metadata["quantized_from"]
    total = sum(len(c) for c in stored.components.values())
    created = not dst.exists()
    try:
        for rel in dict.fromkeys((meta.get("tokenizer", "tokenizer.json"), *COPIED_FILES)):
            p = Path(rel)
            if (src / p).is_file() and not p.is_absolute() and ".." not in p.parts and rel != METADATA_FILE:
                (dst / p).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / p, dst / p)
        with tqdm(
            total=total, desc=f"{policy.bits}-bit {policy.method}", unit="tensor", disable=not progress
        ) as bar:
            comps = {name: _Requantized(tensors, policy, bar) for name, tensors in stored.components.items()}
            save_model_dir(dst, comps, meta, policy)  # metadata.json last: the dir is complete
    except BaseException:
        if created:  # leave nothing half-written behind
            shutil.rmtree(dst, ignore_errors=True)
        raise
    return meta
