"""Approximate nearest-neighbour index over the store's embeddings: HNSW (Malkov & Yashunin 2018,
"Efficient and robust approximate nearest neighbor search using Hierarchical Navigable Small World
graphs") through usearch.

The index is a cache, never the truth: it is keyed by the set of live segment names (which changes with
every write and compaction), persisted beside the segments as ``index/hnsw-<key>.usearch`` plus a
``hnsw-<key>.json`` sidecar (the row ids in key order and the SHA-256 of the index file, written last so
it commits the pair), and rebuilt whenever it is missing, stale or damaged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arrowdiff.errors import ConfigError
from arrowdiff.memory.durable import TMP_PREFIX, make_dirs, write_atomic

INDEX_PREFIX = "hnsw-"


@dataclass(frozen=True)
class IndexConfig:
    """HNSW parameters. The defaults reach recall@10 >= 0.95 on uniformly random 384-d unit vectors (the
    hardest case: real sentence embeddings cluster and are easier)."""

    connectivity: int = 32  # M: graph edges per node (memory ~ 2*M*8 bytes per vector)
    expansion_add: int = 128  # efConstruction: candidate list while building (build time vs quality)
    expansion_search: int = 256  # ef: candidate list while searching (latency vs recall)
    threads: int = 0  # build threads (0 = all cores)

    def __post_init__(self) -> None:
        for field in ("connectivity", "expansion_add", "expansion_search"):
            if getattr(self, field) < 2:
                raise ConfigError(
                    f"IndexConfig.{field}={getattr(self, field)} must be >= 2 (defaults: 32, 128, 256)"
                )
        if self.threads < 0:
            raise ConfigError(f"IndexConfig.threads={self.threads} must be >= 0 (0 = all cores)")


def index_key(segment_names: Iterable[str], dim: int, config: IndexConfig) -> str:
    """A short digest of what the index is built from: the live segments, the dimension and the config."""
    h = hashlib.sha256()
    for name in sorted(segment_names):
        h.update(name.encode() + b"\n")
    h.update(f"{dim}/{config.connectivity}/{config.expansion_add}".encode())
    return h.hexdigest()[:24]


class HNSWIndex:
    """HNSW over the rows of an (N, D) unit-norm matrix; search returns row positions and cosines."""

    def __init__(self, index, ids: list[str]) -> None:
        self._index = index  # usearch.index.Index, keys 0..N-1 = rows
        self.ids = ids

    @classmethod
    def build(cls, matrix: np.ndarray, ids: list[str], config: IndexConfig) -> HNSWIndex:
        from usearch.index import Index

        index = Index(
            ndim=matrix.shape[1],
            metric="ip",  # rows have unit norm: inner product = cosine
            dtype="f32",
            connectivity=config.connectivity,
            expansion_add=config.expansion_add,
            expansion_search=config.expansion_search,
        )
        if len(matrix):
            index.add(
                np.arange(len(matrix), dtype=np.uint64), np.ascontiguousarray(matrix), threads=config.threads
            )
        return cls(index, ids)

    def search(
        self, query: np.ndarray, count: int, expansion: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, scores)`` of up to ``count`` approximate nearest rows, best first."""
        if not self.ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if expansion is not None:
            self._index.expansion_search = max(expansion, count)
        matches = self._index.search(
            np.asarray(query, dtype=np.float32), min(count, len(self.ids)), threads=1
        )
        rows = np.asarray(matches.keys, dtype=np.int64)
        return rows, (1.0 - np.asarray(matches.distances, dtype=np.float32))

    def to_bytes(self) -> bytes:
        return bytes(self._index.save())

    @classmethod
    def from_bytes(cls, data: bytes, ids: list[str], config: IndexConfig) -> HNSWIndex:
        from usearch.index import Index

        index = Index.restore(data)
        if index is None or len(index) != len(ids):
            raise ValueError("index size does not match its id list")
        index.expansion_search = config.expansion_search
        return cls(index, ids)


class IndexCache:
    """The one HNSW index of a store folder: kept in memory, persisted in ``folder``, rebuilt when stale."""

    def __init__(self, folder: Path, config: IndexConfig) -> None:
        self.folder = folder
        self.config = config
        self._key: str | None = None
        self._index: HNSWIndex | None = None
        self.builds = 0  # how many times this cache built an index (tests and benchmarks read it)

    def get(self, key: str, ids: list[str], matrix: np.ndarray) -> HNSWIndex:
        """The index of ``matrix`` (rows = ``ids``): from memory, else from disk, else built and saved."""
        if self._index is not None and self._key == key and self._index.ids == ids:
            return self._index
        index = self._load(key, ids)
        if index is None:
            index = HNSWIndex.build(matrix, ids, self.config)
            self.builds += 1
            self._save(key, index)
        self._key, self._index = key, index
        return index

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{INDEX_PREFIX}{key}.usearch", self.folder / f"{INDEX_PREFIX}{key}.json"

    def _load(self, key: str, ids: list[str]) -> HNSWIndex | None:
        data_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") != key or meta.get("ids") != ids:
                return None
            data = data_path.read_bytes()
            if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
                return None  # torn or damaged: rebuild
            return HNSWIndex.from_bytes(data, ids, self.config)
        except (OSError, ValueError, RuntimeError, TypeError, AttributeError):
            return None

    def _save(self, key: str, index: HNSWIndex) -> None:
        """Best effort: an index that cannot be saved (read-only store) is only kept in memory."""
        data_path, meta_path = self._paths(key)
        try:
            make_dirs(self.folder)
            data = index.to_bytes()
            write_atomic(self.folder, data_path.name, data)
            meta = {"key": key, "sha256": hashlib.sha256(data).hexdigest(), "ids": index.ids}
            write_atomic(self.folder, meta_path.name, json.dumps(meta).encode())
            for old in self.folder.iterdir():  # older indexes are stale: their segments are gone
                if old.name.startswith((INDEX_PREFIX, TMP_PREFIX)) and old.name not in (
                    data_path.name,
                    meta_path.name,
                ):
                    with contextlib.suppress(OSError):
                        old.unlink()
        except OSError:
            pass
