"""Re-quantize a model directory with another QuantPolicy (``arrowdiff quantize``).

Every tensor is dequantized from the source file and stored again as the policy says; a tensor whose
stored form already is what the policy asks for (same bits, group size and method, e.g. embeddings kept
at 8 bits) is copied verbatim, so it is not rounded a second time.

:func:`reindex_model_dir` rewrites a directory's component files in place with every tensor copied
verbatim, so that files written before the index (FORMAT.md section 9) get one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.weights.model_dir import METADATA_FILE, load_model_dir, save_model_dir
from arrowdiff.weights.parquet import StoredTensor, fsync_dir, read_component, read_index, write_component
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
            comps = {
                name: _Requantized(tensors, policy.for_component(name), bar)
                for name, tensors in stored.components.items()
            }
            save_model_dir(dst, comps, meta, policy)  # metadata.json last: the dir is complete
    except BaseException:
        if created:  # leave nothing half-written behind
            shutil.rmtree(dst, ignore_errors=True)
        raise
    return meta


def _same_bytes(a: StoredTensor, b: StoredTensor) -> bool:
    """Same settings, checksum and stored bytes (payload, scales, zeros)."""
    fields = ("shape", "dtype", "bits", "group_size", "method", "pad", "sha256")
    blobs = ("_payload", "_scales", "_zeros")
    return all(getattr(a, f) == getattr(b, f) for f in fields) and all(
        np.array_equal(getattr(a, f), getattr(b, f)) for f in blobs
    )


def reindex_model_dir(dir: Path) -> list[Path]:
    """Rewrite every component file of the model in ``dir`` with the current writer, in place, copying
    each tensor's stored bytes verbatim (so files get the section 9 index); ``metadata.json`` and the other
    files are not touched. Every new file is written to a temporary folder inside ``dir`` first, read back
    and compared with the old one tensor by tensor (names, order, settings, sha256 and bytes), and only
    then renamed over it. Returns the rewritten files."""
    dir = Path(dir)
    model = load_model_dir(dir, verify=True)
    work = dir / f".reindex-{os.getpid()}"
    done = []
    try:
        for component, stored in model.components.items():
            rel = model.metadata["components"][component]
            new = work / rel
            write_component(new, stored, QuantPolicy())  # StoredTensors are copied as stored
            again = read_component(new, verify=True)
            if list(again) != list(stored) or not all(_same_bytes(stored[k], again[k]) for k in stored):
                raise WeightFormatError(f"{dir / rel}: rewriting changed its tensors; the file was kept")
            if read_index(new) is None:
                raise WeightFormatError(f"{dir / rel}: the rewritten file has no valid index; file kept")
            os.replace(new, dir / rel)
            fsync_dir((dir / rel).parent)
            done.append(dir / rel)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return done
