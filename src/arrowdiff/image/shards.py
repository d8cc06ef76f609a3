"""Image shards: caption-image pairs on disk, one array and one table per split.

Layout of a shard directory (written by ``python -m arrowdiff.image.dataset build``)::

    {split}_images.npy        uint8 (N, H, W, 3) RGB on white, for split in (train, val)
    {split}_captions.parquet  N rows, row i describes image i (columns: CAPTION_SCHEMA)
    manifest.json             format, size, counts, sources and versions, sha256 of every file

The arrays are plain ``.npy`` files, so they memory-map (``np.load(mmap_mode="r")``). Built with
``--compress`` they are ``{split}_images.npz`` instead (one deflated array named ``images``, ~4x smaller:
the 64x64 set is ~30 MB, small enough to carry as one folder to a GPU machine), read into memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.image.captions import EmojiRecord
from arrowdiff.image.sources import sha256_file

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val")

CAPTION_SCHEMA = pa.schema(
    [
        ("caption", pa.string()),  # the stored caption (make_caption with caption_rng(seed, record))
        ("name", pa.string()),  # CLDR-style name, e.g. "red apple"
        ("key", pa.string()),  # split key: base emoji name
        ("category", pa.string()),
        ("subcategory", pa.string()),
        ("keywords", pa.list_(pa.string())),  # emojilib tags: re-caption with other seeds at training time
        ("skin_tone", pa.string()),
        ("style", pa.string()),  # "noto" or "fluent flat"
        ("source", pa.string()),  # "noto-png" | "noto-svg" | "fluent-flat-svg"
        ("licence", pa.string()),  # SPDX id of the picture
        ("icon", pa.string()),  # file or icon name inside its package
        ("codepoints", pa.string()),
    ]
)


def images_file(split: str, compress: bool = False) -> str:
    """``"train"`` -> ``"train_images.npy"`` (``"train_images.npz"`` when compressed)."""
    return f"{split}_images.{'npz' if compress else 'npy'}"


def compress_images(npy: Path, npz: Path) -> None:
    """Deflate the ``.npy`` at ``npy`` into ``npz`` (array name ``images``) and delete ``npy``."""
    tmp = npz.with_name(npz.name + ".tmp.npz")
    np.savez_compressed(tmp, images=np.load(npy, mmap_mode="r"))
    tmp.replace(npz)
    npy.unlink()


def captions_file(split: str) -> str:
    """``"train"`` -> ``"train_captions.parquet"``."""
    return f"{split}_captions.parquet"


def new_image_array(path: Path, n: int, size: int) -> np.ndarray:
    """A writable ``(n, size, size, 3)`` uint8 ``.npy`` memory map at ``path`` (fill it, then ``flush``)."""
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))


def write_captions(path: Path, records: Sequence[EmojiRecord], captions: Sequence[str]) -> None:
    """Write the caption table (one row per image, same order) as Parquet."""
    if len(records) != len(captions):
        raise ConfigError(f"{len(records)} records but {len(captions)} captions; pass one caption per record")
    cols: dict[str, list[Any]] = {"caption": list(captions)}
    for name in CAPTION_SCHEMA.names[1:]:
        cols[name] = [list(getattr(r, name)) if name == "keywords" else getattr(r, name) for r in records]
    pq.write_table(pa.table(cols, schema=CAPTION_SCHEMA), path)


def file_entry(path: Path) -> dict[str, Any]:
    """``{"file", "bytes", "sha256"}`` of a written file, for the manifest."""
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (after every data file, so a crash never looks complete)."""
    path = Path(directory) / MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({"format_version": FORMAT_VERSION, **manifest}, indent=2, sort_keys=True) + "\n"
    )
    os.replace(tmp, path)
    return path


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """Read and check ``manifest.json`` of an image shard directory."""
    path = Path(directory) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightFormatError(
            f"image manifest {path} does not exist; build the image set first: "
            f"python -m arrowdiff.image.dataset build --out {directory}"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise WeightFormatError(f"image manifest {path} is unreadable ({e}); rebuild the image set") from e
    if manifest.get("format_version") != FORMAT_VERSION:
        raise WeightFormatError(
            f"image manifest {path}: format_version={manifest.get('format_version')!r}, this code reads "
            f"{FORMAT_VERSION}; rebuild the image set"
        )
    return manifest


def _entry(directory: Path, split: str, kind: str) -> tuple[dict[str, Any], Path]:
    manifest = load_manifest(directory)
    splits = manifest.get("splits", {})
    if split not in splits:
        raise ConfigError(f"split {split!r} is not in {directory / MANIFEST_NAME}; it has {sorted(splits)}")
    entry = splits[split][kind]
    path = Path(directory) / entry["file"]
    if not path.is_file():
        raise WeightFormatError(f"{path} is missing; rebuild the image set")
    return entry, path


def open_images(directory: str | Path, split: str, *, verify_sha256: bool = False) -> np.ndarray:
    """One split's ``(N, H, W, 3)`` uint8 images, read-only: memory-mapped (``.npy``) or decompressed into
    memory (``.npz``); the shape must match the manifest."""
    directory = Path(directory)
    entry, path = _entry(directory, split, "images")
    if verify_sha256 and sha256_file(path) != entry["sha256"]:
        raise WeightFormatError(f"{path}: sha256 differs from the manifest; rebuild the image set")
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                images = archive["images"]
            images.flags.writeable = False
        else:
            images = np.load(path, mmap_mode="r")
    except (OSError, ValueError, KeyError) as e:
        raise WeightFormatError(f"{path} is not a readable image array ({e}); rebuild the image set") from e
    expected = tuple(entry["shape"])
    if images.shape != expected or images.dtype != np.uint8:
        raise WeightFormatError(
            f"{path}: shape {images.shape} {images.dtype}, manifest says {expected} uint8; "
            "rebuild the image set"
        )
    return images


def read_captions(directory: str | Path, split: str) -> pa.Table:
    """One split's caption table (row i describes image i)."""
    _, path = _entry(Path(directory), split, "captions")
    return pq.read_table(path)
