"""Build the caption-image set: ``python -m arrowdiff.image.dataset build --out data/images [--size 64]``.

Fetches the pinned npm tarballs (sources.py) into ``--downloads``, matches every picture to its emoji,
rasterises it at ``--size`` on white (raster.py), makes one caption per picture (captions.py), splits by
a hash of the emoji's base name (so every source and skin tone of one emoji lands in the same split) and
writes the shard directory described in shards.py. Deterministic: the same tarballs, size and seed give
byte-identical files.

    python -m arrowdiff.image.dataset fetch [--downloads data/downloads]
    python -m arrowdiff.image.dataset build --out data/images [--size 64] [--seed 0] [--held-out 0.05]
        [--sources noto-png,noto-svg,fluent-flat-svg] [--splits train,val] [--max-per-split N] [--compress]
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from arrowdiff.errors import ArrowDiffError, ConfigError
from arrowdiff.image.captions import caption_rng, make_caption
from arrowdiff.image.raster import render
from arrowdiff.image.shards import (
    SPLITS,
    captions_file,
    compress_images,
    file_entry,
    images_file,
    new_image_array,
    write_captions,
    write_manifest,
)
from arrowdiff.image.sources import PACKAGES, SOURCES, SourceItem, fetch_packages, iter_items


def held_out(key: str, fraction: float) -> bool:
    """Whether the emoji named ``key`` is in the held-out split: the first 8 bytes of SHA-256 of its name,
    read as a fraction of 2**64, fall below ``fraction`` (stable across runs, machines and sources)."""
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return h < fraction * 2**64


def split_items(items: list[SourceItem], fraction: float) -> dict[str, list[SourceItem]]:
    """``{"train": [...], "val": [...]}`` by :func:`held_out` on each record's key, order kept."""
    out: dict[str, list[SourceItem]] = {s: [] for s in SPLITS}
    for item in items:
        out["val" if held_out(item.record.key, fraction) else "train"].append(item)
    return out


def _thin(items: list[SourceItem], n: int) -> list[SourceItem]:
    """At most ``n`` items, evenly strided (every source stays represented)."""
    if n <= 0 or len(items) <= n:
        return items
    return [items[i * len(items) // n] for i in range(n)]


def build_image_set(
    out: Path,
    downloads: Path,
    size: int = 64,
    seed: int = 0,
    fraction: float = 0.05,
    sources: tuple[str, ...] = tuple(SOURCES),
    splits: tuple[str, ...] = SPLITS,
    max_per_split: int = 0,
    compress: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Build the shard directory ``out`` and return its manifest."""
    if size < 8 or size % 8:
        raise ConfigError(
            f"--size {size} must be a multiple of 8 and >= 8 (the VAE downsamples by 8): try 64"
        )
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"--held-out {fraction} must be in (0, 1): try 0.05")
    bad = [s for s in sources if s not in SOURCES] + [s for s in splits if s not in SPLITS]
    if bad:
        raise ConfigError(f"unknown source/split {bad}; sources: {sorted(SOURCES)}, splits: {list(SPLITS)}")
    t0 = time.perf_counter()
    tarballs = fetch_packages(downloads)
    by_split = split_items(list(iter_items(tarballs, sources)), fraction)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split_entries: dict[str, Any] = {}
    for split in splits:
        items = _thin(by_split[split], max_per_split)
        path = out / images_file(split)
        tmp = path.with_name(path.name + ".tmp.npy")
        images = new_image_array(tmp, len(items), size)
        for i, item in enumerate(tqdm(items, desc=f"rasterise {split} @{size}", dynamic_ncols=True)):
            images[i] = render(item.kind, item.data, size, item.hflip)
        images.flush()
        del images
        if compress:
            path = out / images_file(split, compress=True)
            compress_images(tmp, path)
        else:
            tmp.replace(path)
        records = [item.record for item in items]
        captions = [make_caption(r, caption_rng(seed, r)) for r in records]
        write_captions(out / captions_file(split), records, captions)
        split_entries[split] = {
            "count": len(items),
            "by_source": dict(sorted(Counter(r.source for r in records).items())),
            "emoji": len({r.key for r in records}),
            "images": {
                **file_entry(path),
                "shape": [len(items), size, size, 3],
                "dtype": "uint8",
                "encoding": "npz-deflate" if compress else "npy",
            },
            "captions": file_entry(out / captions_file(split)),
        }
    used = {SOURCES[s][0] for s in sources} | {"emojilib", "noto", "emoji-datasource-google"}
    manifest = {
        "size": size,
        "seed": seed,
        "held_out_fraction": fraction,
        "split_rule": "val iff int(sha256(key)[:8 bytes]) < fraction * 2**64; key = base emoji name",
        "sources": list(sources),
        "packages": {
            name: {
                "npm": p.spec,
                "tarball": p.tarball,
                "sha256": p.sha256,
                "licence": p.licence,
                "licence_url": p.url,
            }
            for name, p in PACKAGES.items()
            if name in used
        },
        "splits": split_entries,
        "background": "white (alpha composited)",
        "command": command,
    }
    write_manifest(out, manifest)  # no timings in it: the same inputs give a byte-identical manifest
    return {**manifest, "build_s": round(time.perf_counter() - t0, 1)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m arrowdiff.image.dataset", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the pinned npm tarballs and check their sha256")
    f.add_argument("--downloads", default="data/downloads")
    b = sub.add_parser("build", help="fetch if needed, rasterise, caption, split, write shards")
    b.add_argument("--out", default="data/images")
    b.add_argument("--downloads", default="data/downloads")
    b.add_argument("--size", type=int, default=64, help="square training resolution, a multiple of 8")
    b.add_argument("--seed", type=int, default=0, help="seed of the caption templates")
    b.add_argument("--held-out", type=float, default=0.05, help="fraction of emoji names held out (val)")
    b.add_argument("--sources", default=",".join(SOURCES), help=f"comma list of {', '.join(SOURCES)}")
    b.add_argument("--splits", default=",".join(SPLITS), help="comma list of train, val")
    b.add_argument("--max-per-split", type=int, default=0, help="keep at most N per split (0 = all)")
    b.add_argument("--compress", action="store_true", help="deflated .npz arrays (~4x smaller, to carry)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "fetch":
            for name, path in fetch_packages(Path(args.downloads)).items():
                print(f"ok {name}: {path}")
            return 0
        manifest = build_image_set(
            Path(args.out),
            Path(args.downloads),
            size=args.size,
            seed=args.seed,
            fraction=args.held_out,
            sources=tuple(s for s in args.sources.split(",") if s),
            splits=tuple(s for s in args.splits.split(",") if s),
            max_per_split=args.max_per_split,
            compress=args.compress,
            command=shlex.join(["python", "-m", "arrowdiff.image.dataset", *argv]),
        )
    except ArrowDiffError as e:
        print(f"arrowdiff.image.dataset: error: {e}", file=sys.stderr)
        return 2
    counts = {s: e["count"] for s, e in manifest["splits"].items()}
    print(f"wrote {args.out}: {counts} images at {args.size}x{args.size} in {manifest['build_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
