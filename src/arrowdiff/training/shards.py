"""Token shards: raw little-endian uint16 token ids, each document followed by ``<eot>``.

Layout of a shard directory::

    {split}_{modality}.bin   for split in (train, val), modality in (text, code)
    manifest.json            counts, sha256 of every .bin, tokenizer sha256, sources
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from arrowdiff.errors import WeightFormatError
from arrowdiff.tokenizer import TextTokenizer

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DTYPE = np.dtype("<u2")
SPLITS = ("train", "val")
MODALITIES = ("text", "code")


def shard_name(split: str, modality: str) -> str:
    """File name of one shard, e.g. ``train_code.bin``."""
    return f"{split}_{modality}.bin"


def write_shard(path: str | Path, docs_token_lists: Iterable[Sequence[int]], eot_id: int) -> tuple[int, str]:
    """Write documents' token ids, each followed by ``eot_id``; return ``(n_tokens, sha256 of file)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    n_tokens = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        for ids in docs_token_lists:
            src = np.asarray(ids, dtype=np.int64)
            if src.size and (src.min() < 0 or src.max() > 0xFFFF):
                raise ValueError(f"token id out of uint16 range while writing {path}")
            arr = np.empty(src.size + 1, dtype=DTYPE)
            arr[:-1] = src
            arr[-1] = eot_id
            buf = arr.tobytes()
            digest.update(buf)
            f.write(buf)
            n_tokens += arr.size
    tmp.replace(path)
    return n_tokens, digest.hexdigest()


def manifest_header(tokenizer: TextTokenizer, tokenizer_path: Path, seed: int) -> dict:
    """The manifest fields every shard set carries: format, dtype and the tokenizer it was encoded with."""
    return {
        "format_version": FORMAT_VERSION,
        "dtype": "uint16-le",
        "tokenizer_file": "../tokenizer.json",
        "tokenizer_sha256": hashlib.sha256(Path(tokenizer_path).read_bytes()).hexdigest(),
        "vocab_size": tokenizer.vocab_size,
        "special_ids": {"pad": tokenizer.pad_id, "mask": tokenizer.mask_id, "eot": tokenizer.eot_id},
        "seed": seed,
    }


def load_manifest(directory: str | Path) -> dict:
    """Read and sanity-check ``manifest.json`` in ``directory``."""
    path = Path(directory) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightFormatError(f"shard manifest {path} does not exist; build shards first") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightFormatError(f"shard manifest {path} is unreadable: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise WeightFormatError(
            f"shard manifest {path}: format_version={manifest.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}; rebuild the shards"
        )
    return manifest


def open_shard(
    directory: str | Path, split: str, modality: str, *, verify_sha256: bool = False
) -> np.ndarray:
    """Memory-map one shard read-only (uint16 ``np.memmap``); size must match the manifest token count."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    key = f"{split}_{modality}"
    entry = manifest.get("shards", {}).get(key)
    if entry is None:
        raise WeightFormatError(
            f"shard {key!r} not in {directory / MANIFEST_NAME}; have {sorted(manifest.get('shards', {}))}"
        )
    path = directory / entry["file"]
    if not path.is_file():
        raise WeightFormatError(f"shard file {path} is missing")
    expected = int(entry["tokens"]) * DTYPE.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise WeightFormatError(
            f"shard file {path} has {actual} bytes, manifest says {entry['tokens']} tokens = {expected} "
            "bytes; the file is truncated or stale, rebuild the shards"
        )
    if verify_sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != entry["sha256"]:
            raise WeightFormatError(f"shard file {path}: sha256 mismatch with manifest; rebuild the shards")
    if expected == 0:
        empty = np.zeros(0, DTYPE)  # an empty file cannot be memory-mapped
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=DTYPE, mode="r")
