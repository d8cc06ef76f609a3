"""Approximate nearest-neighbour index over the store's embeddings: HNSW (Malkov & Yashunin 2018,
"Efficient and robust approximate nearest neighbor search using Hierarchical Navigable Small World
graphs") through usearch.

The index is a cache, never the truth. It is persisted beside the segments as
``index/hnsw-<sha256>.usearch`` plus ``index/hnsw.json``, written last so that it commits the pair: the
key of the store state it was built from (the live segment names), the row ids in key order, the SHA-256
of the index file and of the embedding rows. A store that only grew since (new ids appended, the old rows
unchanged) gets the new rows appended to the graph; any other change (update, delete) rebuilds it, as
does a missing, torn or damaged file.
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

    def extend(self, rows: np.ndarray, ids: list[str], config: IndexConfig) -> None:
        """Append rows (keys continue from the current size)."""
        start = len(self.ids)
        keys = np.arange(start, start + len(rows), dtype=np.uint64)
        self._index.add(keys, np.ascontiguousarray(rows, dtype=np.float32), threads=config.threads)
        self.ids = self.ids + list(ids)

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
    """The one HNSW index of a store folder: kept in memory, persisted in ``folder``, brought up to date
    by appending rows when the store only grew, rebuilt when anything else changed."""

    SIDECAR = "hnsw.json"

    def __init__(self, folder: Path, config: IndexConfig) -> None:
        self.folder = folder
        self.config = config
        self._key: str | None = None
        self._index: HNSWIndex | None = None
        self._rows: np.ndarray | None = None  # the (read-only) matrix the in-memory index was made from
        self._saved_rows = 0  # rows in the persisted copy
        self.builds = 0  # full builds by this cache (tests and benchmarks read it)
        self.appends = 0  # incremental updates by this cache

    def get(self, key: str, ids: list[str], matrix: np.ndarray) -> HNSWIndex:
        """The index of ``matrix`` (rows = ``ids``): from memory, else from disk, appended to when the
        store only grew, else built; persisted when built or grown by 10%."""
        index = self._index
        if index is not None and self._key == key and index.ids == ids:
            return index
        if index is None or not self._is_prefix(index, self._rows, ids, matrix):
            index = self._load(key, ids, matrix)
        if index is None:
            index = HNSWIndex.build(matrix, ids, self.config)
            self.builds += 1
            self._saved_rows = 0
        elif len(index.ids) < len(ids):
            n = len(index.ids)
            index.extend(matrix[n:], ids[n:], self.config)
            self.appends += 1
        self._key, self._index, self._rows = key, index, matrix
        if self._saved_rows == 0 or len(ids) > 1.1 * self._saved_rows:
            self._save(key, index, matrix)
        return index

    @staticmethod
    def _is_prefix(index: HNSWIndex, rows: np.ndarray | None, ids: list[str], matrix: np.ndarray) -> bool:
        n = len(index.ids)
        return (
            rows is not None
            and n <= len(ids)
            and ids[:n] == index.ids
            and (rows is matrix or np.array_equal(rows[:n], matrix[:n]))
        )

    def _load(self, key: str, ids: list[str], matrix: np.ndarray) -> HNSWIndex | None:
        """The persisted index if it is this state's, or a prefix of it (same first ids and rows)."""
        try:
            meta = json.loads((self.folder / self.SIDECAR).read_text())
            saved_ids = meta["ids"]
            n = len(saved_ids)
            if meta["key"] != key or saved_ids != ids:
                if n > len(ids) or ids[:n] != saved_ids or meta["rows_sha256"] != rows_digest(matrix[:n]):
                    return None
            data = (self.folder / meta["file"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                return None  # torn or damaged: rebuild
            index = HNSWIndex.from_bytes(data, saved_ids, self.config)
            self._saved_rows = n
            return index
        except (OSError, ValueError, RuntimeError, TypeError, AttributeError, KeyError):
            return None

    def _save(self, key: str, index: HNSWIndex, matrix: np.ndarray) -> None:
        """Publish the index file (named by its hash), then the sidecar that points to it; remove older
        files. Best effort: an index that cannot be saved (read-only store) is only kept in memory."""
        try:
            make_dirs(self.folder)
            data = index.to_bytes()
            digest = hashlib.sha256(data).hexdigest()
            file = f"{INDEX_PREFIX}{digest[:24]}.usearch"
            write_atomic(self.folder, file, data)
            meta = {
                "key": key,
                "file": file,
                "sha256": digest,
                "rows_sha256": rows_digest(matrix),
                "ids": index.ids,
            }
            write_atomic(self.folder, self.SIDECAR, json.dumps(meta).encode())
            self._saved_rows = len(index.ids)
            for old in self.folder.iterdir():  # files of earlier states
                if old.name.startswith((INDEX_PREFIX, TMP_PREFIX)) and old.name != file:
                    with contextlib.suppress(OSError):
                        old.unlink()
        except OSError:
            pass


def rows_digest(matrix: np.ndarray) -> str:
    """SHA-256 of the embedding rows an index was built from (detects updated embeddings)."""
    return hashlib.sha256(np.ascontiguousarray(matrix, dtype=np.float32).tobytes()).hexdigest()
