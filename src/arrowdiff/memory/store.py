"""ArrowStorage: the durable vector memory store (memories and adaptations), on Parquet segments.

On disk (FORMAT.md beside this file)::

    <store>/LOCK                                      flock: writers exclusive, readers shared
    <store>/segments/seg-<first>-<last>-<sha256>.parquet   immutable, published by atomic rename
    <store>/quarantine/                               damaged segments moved aside by compact()
    <store>/index/hnsw-<sha256>.usearch, hnsw.json     the ANN index cache (index.py)

How a write is made durable, how segments are merged, how damaged files are handled and how every
instance sees the writes of every other process: ``segment_log.py`` (the segment folder replayed into the
current state). Search plumbing: ``search.py``; argument checks: ``checks.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from arrowdiff.encoder import EMBED_DIM
from arrowdiff.errors import ConfigError, StorageError
from arrowdiff.memory.checks import (
    check_batch,
    check_changes,
    check_embeddings,
    check_query,
    check_search,
    one_row,
)
from arrowdiff.memory.durable import StoreLock, make_dirs
from arrowdiff.memory.index import IndexCache, IndexConfig, index_key
from arrowdiff.memory.records import Memory, SearchHit
from arrowdiff.memory.search import METHODS, exact_candidates, index_candidates, rank
from arrowdiff.memory.segment_log import DamagedSegment, SegmentLog, StorageWarning
from arrowdiff.memory.segments import Entry

Embedder = Callable[[list[str]], np.ndarray]  # texts -> (N, D) float32
__all__ = ["METHODS", "ArrowStorage", "DamagedSegment", "Embedder", "StorageWarning"]


class ArrowStorage:
    """A persistent, crash-safe, multi-process vector memory store (see the module docstring).

    ``embedder`` maps a list of texts to an (N, dim) float32 array; by default the project's MiniLM
    sentence encoder (loaded on first use). Nothing is read or written until the first operation.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        embedder: Embedder | None = None,
        *,
        dim: int = EMBED_DIM,
        max_segments: int = 32,
        strict: bool = False,
        index_config: IndexConfig | None = None,
    ) -> None:
        if dim < 1:
            raise ConfigError(f"dim={dim} must be >= 1 (the embedding size; MiniLM gives {EMBED_DIM})")
        if max_segments < 2:
            raise ConfigError(f"max_segments={max_segments} must be >= 2 (default 32)")
        self.path = Path(path).expanduser()
        self.dim = dim
        self.max_segments = max_segments  # more live segments than this triggers a merge after a write
        self._embedder = embedder
        self._lock = StoreLock(self.path / "LOCK")
        self._mutex = self._lock.thread_lock  # one thread at a time touches the in-memory state
        self._index = IndexCache(self.path / "index", index_config or IndexConfig())
        self._log = SegmentLog(self.path, dim, strict)  # the segments and the state they replay to

    # ---- reading -------------------------------------------------------------------------------------
    @property
    def segments_dir(self) -> Path:
        return self.path / "segments"

    @property
    def strict(self) -> bool:
        """Raise StorageError on a damaged segment instead of skipping it (default False)."""
        return self._log.strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self._log.strict = value

    @property
    def damaged(self) -> list[DamagedSegment]:
        """Segment files skipped because they failed verification (after a refresh)."""
        with self._mutex:
            self.refresh()
            return list(self._log.damaged.values())

    def refresh(self) -> None:
        """Pick up writes made by other instances and processes since the last operation (cheap when
        nothing changed: one directory listing). Every public method calls it."""
        with self._mutex, self._io_errors("read"):
            if self._log.list_names() == self._log.listed:
                return
            with self._lock.shared():
                self._log.refresh_locked()

    def __len__(self) -> int:
        with self._mutex:
            self.refresh()
            return len(self._log.state)

    def __contains__(self, id_: object) -> bool:
        with self._mutex:
            self.refresh()
            return id_ in self._log.state

    def get(self, id_: str) -> Memory:
        """The memory with this id; StorageError if there is none."""
        with self._mutex:
            self.refresh()
            return self._require(id_)

    def list(
        self,
        kind: str | None = None,
        modality: str | None = None,
        limit: int | None = None,
        *,
        newest_first: bool = False,
    ) -> list[Memory]:
        """Live memories in stored order (oldest first, or newest first), filtered, at most ``limit``."""
        if limit is not None and limit < 0:
            raise ConfigError(f"limit={limit} must be >= 0 (or None for all)")
        with self._mutex:
            self.refresh()
            found = [m for m in self._log.state.values() if _matches(m, kind, modality)]
        if newest_first:
            found.reverse()
        return found if limit is None else found[:limit]

    def embeddings_matrix(self, kind: str | None = None, modality: str | None = None) -> np.ndarray:
        """The (N, dim) float32 unit-norm embeddings of ``list(kind, modality)``, row for row.

        Read-only when unfiltered. Use ``snapshot()`` to get the memories and the matrix of one state.
        """
        return self.snapshot(kind, modality)[1]

    def snapshot(
        self, kind: str | None = None, modality: str | None = None
    ) -> tuple[list[Memory], np.ndarray]:
        """``(memories, matrix)`` of one consistent state: ``matrix[i]`` is ``memories[i].embedding``."""
        with self._mutex:
            self.refresh()
            view = self._log.view()
        rows = view.rows(kind, modality)
        if rows is None:
            return list(view.memories), view.matrix
        return [view.memories[i] for i in rows], view.matrix[rows]

    def search(
        self,
        query: str | np.ndarray,
        k: int = 10,
        *,
        kind: str | None = None,
        modality: str | None = None,
        method: str = "exact",
        beta: float = 8.0,
        candidates: int = 64,
        steps: int = 1,
    ) -> list[SearchHit]:
        """The ``k`` memories most relevant to ``query`` (a text, embedded by the store's embedder, or an
        embedding), best first.

        ``method``: ``"exact"`` brute-force cosine; ``"index"`` the HNSW index (built and persisted on
        first use, extended after adds, rebuilt after updates and deletes), re-scored exactly;
        ``"hopfield"`` modern Hopfield retrieval (Ramsauer et al. 2021) with inverse temperature ``beta``
        and ``steps`` updates over the ``candidates`` nearest memories, ranked by Hopfield weight.
        ``kind``/``modality`` restrict the search to matching memories.
        """
        check_search(k, method, beta, candidates)
        check_query(query, self.dim)
        with self._mutex:
            self.refresh()
            view, live_names = self._log.view(), [s.file_name for s in self._log.live_names]
        rows = view.rows(kind, modality)
        n = len(view.ids) if rows is None else len(rows)
        if n == 0:
            return []
        q = self._query_vector(query)  # may run the embedder: outside the lock
        pool = max(k, candidates) if method == "hopfield" else k
        if method == "index":
            key = index_key(live_names, self.dim, self._index.config)
            with self._mutex:
                index = self._index.get(key, view.ids, view.matrix)
            cand, scores = index_candidates(index, view, q, pool, rows)
        else:
            cand, scores = exact_candidates(view, q, pool, rows)
        return rank(view, cand, scores, q, k, method=method, beta=beta, steps=steps)

    def verify(self) -> list[DamagedSegment]:
        """Re-read and re-hash every segment file; return the damaged ones (empty: the store is intact)."""
        with self._mutex, self._io_errors("read"), self._lock.shared():
            self._log.forget()
            self._log.refresh_locked(warn=False)
        return list(self._log.damaged.values())

    # ---- writing -------------------------------------------------------------------------------------
    def add(
        self,
        text: str,
        *,
        embedding: np.ndarray | None = None,
        modality: str = "text",
        kind: str = "memory",
        metadata: dict[str, Any] | None = None,
        payload: str | os.PathLike[str] | None = None,
    ) -> str:
        """Store one memory durably; return its id."""
        return self.add_many(
            [text],
            None if embedding is None else one_row(embedding),
            modality=modality,
            kind=kind,
            metadatas=None if metadata is None else [metadata],
            payloads=None if payload is None else [payload],
        )[0]

    def add_many(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray | None = None,
        *,
        modality: str = "text",
        kind: str = "memory",
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        payloads: Sequence[str | os.PathLike[str] | None] | None = None,
    ) -> list[str]:
        """Store several memories in one durable write (one segment, one fsync); return their ids."""
        texts, metas, pays = check_batch(texts, modality, kind, metadatas, payloads)
        n = len(texts)
        if n == 0:
            return []
        emb = self._embed(texts) if embeddings is None else check_embeddings(embeddings, n, self.dim)
        now = datetime.now(UTC)
        memories = [
            Memory(uuid.uuid4().hex, t, e, now, kind, modality, m, p)
            for t, e, m, p in zip(texts, emb, metas, pays, strict=True)
        ]
        self._write(lambda: [(m.id, m) for m in memories])
        return [m.id for m in memories]

    def update(
        self,
        id_: str,
        *,
        text: str | None = None,
        embedding: np.ndarray | None = None,
        modality: str | None = None,
        kind: str | None = None,
        metadata: dict[str, Any] | None = None,
        payload: str | os.PathLike[str] | None = None,
    ) -> Memory:
        """Change fields of a memory (``metadata`` replaces the old dict); re-embed when the text changes
        and no embedding is given. Keeps id and created_at. Returns the new record."""
        new_text, meta, pay = check_changes(text, modality, kind, metadata, payload)
        emb = None if embedding is None else check_embeddings(one_row(embedding), 1, self.dim)[0]
        old = self.get(id_)
        if emb is None and new_text is not None and new_text != old.text:
            emb = self._embed([new_text])[0]  # embedded before taking the lock: writers wait less
        result: list[Memory] = []

        def entries() -> list[Entry]:
            cur = self._require(id_)  # re-read under the lock: another process may have changed it
            e = emb
            if e is None and new_text is not None and new_text != cur.text:
                e = self._embed([new_text])[0]  # the text changed again meanwhile
            m = Memory(
                cur.id,
                cur.text if new_text is None else new_text,
                cur.embedding if e is None else e,
                cur.created_at,
                cur.kind if kind is None else kind,
                cur.modality if modality is None else modality,
                cur.metadata_json if meta is None else meta,
                cur.payload if pay is None else pay,
            )
            result.append(m)
            return [(m.id, m)]

        self._write(entries)
        return result[0]

    def delete(self, id_: str) -> None:
        """Remove a memory durably; StorageError if there is none with this id."""
        self.get(id_)
        self._write(lambda: [(self._require(id_).id, None)])

    def compact(self) -> None:
        """Merge every live segment into one (dropping deleted records) and move damaged segments to
        ``quarantine/``. Crash-safe: the merged file is published before any input is removed."""
        log = self._log
        with self._io_errors("compact"), self._lock.exclusive():
            log.refresh_locked()
            log.quarantine_locked()
            if len(log.live_names) > 1 or log.has_tombstones():
                log.merge_locked(0)
            if log.segments_dir.is_dir():
                log.cleanup_locked()

    # ---- internals -----------------------------------------------------------------------------------
    @contextmanager
    def _io_errors(self, doing: str) -> Iterator[None]:
        """Turn an operating-system error (no such folder, no permission, disk full) into one clear line."""
        try:
            yield
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            raise StorageError(
                f"cannot {doing} the memory store at {self.path}: {e.strerror or e}{where}; "
                "check the folder and its permissions, or choose another one (--store PATH)"
            ) from e

    def _write(self, make_entries: Callable[[], list[Entry]]) -> None:
        """Append one segment holding ``make_entries()`` (built under the lock, on the latest state)."""
        with self._io_errors("write to"), self._lock.exclusive():
            make_dirs(self._log.segments_dir)
            self._log.refresh_locked()
            self._log.append_locked(make_entries(), self.max_segments)

    def _require(self, id_: str) -> Memory:
        memory = self._log.state.get(id_)
        if memory is None:
            raise StorageError(
                f"no memory with id {id_!r} in {self.path} "
                "(ids are 32-hex-digit strings returned by add(); `arrowdiff memory list` shows them)"
            )
        return memory

    def _embedder_fn(self) -> Embedder:
        if self._embedder is None:
            from arrowdiff.encoder import SentenceEncoder

            self._embedder = SentenceEncoder().encode
        return self._embedder

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = self._embedder_fn()(texts)
        return check_embeddings(out, len(texts), self.dim, source="the embedder returned")

    def _query_vector(self, query: str | np.ndarray) -> np.ndarray:
        if isinstance(query, str):
            return self._embed([query])[0]
        return check_embeddings(np.asarray(query).reshape(1, -1), 1, self.dim, source="query embedding")[0]


def _matches(m: Memory, kind: str | None, modality: str | None) -> bool:
    return (kind is None or m.kind == kind) and (modality is None or m.modality == modality)
