"""ArrowStorage: the durable vector memory store (memories and adaptations), on Parquet segments.

On disk (FORMAT.md beside this file)::

    <store>/LOCK                                      flock: writers exclusive, readers shared
    <store>/segments/seg-<first>-<last>-<sha256>.parquet   immutable, published by atomic rename
    <store>/quarantine/                               damaged segments moved aside by compact()
    <store>/index/hnsw-<sha256>.usearch, hnsw.json     the ANN index cache (index.py)

Every write (add, add_many, update, delete) appends ONE new segment: its rows are upserts (full records)
and tombstones, numbered one past the highest sequence number in the folder; replaying the live segments
in sequence order (later entries win) gives the store's content. A write returns only after the segment
file and the directory are fsynced, and a crash at any moment leaves either no new name or the complete
file: at most the write in flight is lost and the store never needs repair. Merges (``compact()``, and
automatically when more than ``max_segments`` segments exist) write one segment whose name covers the
merged range and then delete the inputs; a segment covered by another is ignored, so a crash between the
two steps is harmless too. Damaged files (bytes that do not match the checksum in the name) are skipped
with a warning, listed in ``damaged`` and by ``verify()``, and moved to ``quarantine/`` by ``compact()``.

Readers re-list the segment folder at the start of each operation (one ``listdir``) and read only files
they have not seen, so every instance sees the writes of every other process.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from arrowdiff.encoder import EMBED_DIM
from arrowdiff.errors import ConfigError, StorageError
from arrowdiff.memory.checks import check_label, check_payload, check_text, encode_metadata, one_row
from arrowdiff.memory.compaction import merge_entries, plan_compaction
from arrowdiff.memory.durable import TMP_PREFIX, StoreLock, fsync_dir, make_dirs
from arrowdiff.memory.index import IndexCache, IndexConfig, index_key
from arrowdiff.memory.records import Memory, SearchHit
from arrowdiff.memory.retrieval import exact_topk, hopfield_retrieve, normalize, softmax
from arrowdiff.memory.segments import (
    DamagedSegmentError,
    Entry,
    Segment,
    SegmentName,
    read_segment,
    write_segment,
)

Embedder = Callable[[list[str]], np.ndarray]  # texts -> (N, D) float32
METHODS = ("exact", "hopfield", "index")


class StorageWarning(UserWarning):
    """A damaged segment was skipped while opening a store."""


@dataclass(frozen=True)
class DamagedSegment:
    """A segment file that failed verification, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class _View:
    """The live memories of one store state, in stored order, with their embeddings as one matrix."""

    memories: list[Memory]
    ids: list[str]
    matrix: np.ndarray  # (N, D) float32, read-only
    kinds: np.ndarray  # (N,) object
    modalities: np.ndarray  # (N,) object

    def rows(self, kind: str | None, modality: str | None) -> np.ndarray | None:
        """Row positions passing the filters, or None for all rows."""
        if kind is None and modality is None:
            return None
        keep = np.ones(len(self.ids), dtype=bool)
        if kind is not None:
            keep &= self.kinds == kind
        if modality is not None:
            keep &= self.modalities == modality
        return np.flatnonzero(keep)


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
        self.strict = strict  # raise StorageError on a damaged segment instead of skipping it
        self._embedder = embedder
        self._lock = StoreLock(self.path / "LOCK")
        self._mutex = self._lock.thread_lock  # one thread at a time touches the in-memory state
        self._index = IndexCache(self.path / "index", index_config or IndexConfig())
        self._listed: frozenset[str] | None = None  # segment file names at the last refresh
        self._loaded: dict[str, Segment] = {}  # healthy segments read so far, by file name
        self._damaged: dict[str, DamagedSegment] = {}
        self._live_names: list[SegmentName] = []  # replayed segments, oldest first
        self._state: dict[str, Memory] = {}  # id -> memory, in stored order
        self._view_cache: _View | None = None

    # ---- reading -------------------------------------------------------------------------------------
    @property
    def segments_dir(self) -> Path:
        return self.path / "segments"

    @property
    def damaged(self) -> list[DamagedSegment]:
        """Segment files skipped because they failed verification (after a refresh)."""
        with self._mutex:
            self.refresh()
            return list(self._damaged.values())

    def refresh(self) -> None:
        """Pick up writes made by other instances and processes since the last operation (cheap when
        nothing changed: one directory listing). Every public method calls it."""
        with self._mutex, self._io_errors("read"):
            if self._list_names() == self._listed:
                return
            with self._lock.shared():
                self._refresh_locked()

    def __len__(self) -> int:
        with self._mutex:
            self.refresh()
            return len(self._state)

    def __contains__(self, id_: object) -> bool:
        with self._mutex:
            self.refresh()
            return id_ in self._state

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
            found = [m for m in self._state.values() if _matches(m, kind, modality)]
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
            view = self._view()
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
        if not isinstance(k, int | np.integer) or k < 1:
            raise ConfigError(f"k={k!r} must be an integer >= 1 (the number of memories to return)")
        if method not in METHODS:
            raise ConfigError(f"method={method!r} is not one of {', '.join(METHODS)}")
        if beta <= 0:
            raise ConfigError(f"beta={beta} must be > 0 (inverse temperature; 8-32 for unit-norm embeddings)")
        if candidates < 1:
            raise ConfigError(f"candidates={candidates} must be >= 1 (Hopfield candidate pool; default 64)")
        self._check_query(query)
        with self._mutex:
            self.refresh()
            view, live_names = self._view(), [s.file_name for s in self._live_names]
        rows = view.rows(kind, modality)
        n = len(view.ids) if rows is None else len(rows)
        if n == 0:
            return []
        q = self._query_vector(query)  # may run the embedder: outside the lock
        pool = max(k, candidates) if method == "hopfield" else k
        if method == "index":
            cand, scores = self._index_topk(view, live_names, q, pool, rows)
        else:
            matrix = view.matrix if rows is None else view.matrix[rows]
            cand, scores = exact_topk(matrix, q, pool)
            cand = cand if rows is None else rows[cand]
        if method == "hopfield":
            _, p = hopfield_retrieve(view.matrix[cand], q, beta=beta, steps=steps)
            order = np.lexsort((np.arange(len(cand)), -p))[:k]
            return [SearchHit(view.memories[cand[i]], float(scores[i]), float(p[i])) for i in order]
        weights = softmax(beta * scores)
        return [
            SearchHit(view.memories[r], float(s), float(w))
            for r, s, w in zip(cand, scores, weights, strict=True)
        ]

    def verify(self) -> list[DamagedSegment]:
        """Re-read and re-hash every segment file; return the damaged ones (empty: the store is intact)."""
        with self._mutex, self._io_errors("read"), self._lock.shared():
            self._loaded.clear()
            self._damaged.clear()
            self._listed = None
            self._refresh_locked(warn=False)
        return list(self._damaged.values())

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
        if isinstance(texts, str):
            raise ConfigError("add_many() takes a list of texts; use add() for one text")
        texts = [check_text(t) for t in texts]
        n = len(texts)
        for name, values in (("metadatas", metadatas), ("payloads", payloads)):
            if values is not None and len(values) != n:
                raise ConfigError(
                    f"{name} has {len(values)} entries for {n} texts; give one per text or None"
                )
        check_label("modality", modality)
        check_label("kind", kind)
        metas = [encode_metadata(m) for m in (metadatas or [None] * n)]
        pays = [check_payload(p) for p in (payloads or [None] * n)]
        if n == 0:
            return []
        emb = self._embed(texts) if embeddings is None else self._check_embeddings(embeddings, n)
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
        new_text = None if text is None else check_text(text)
        for name, value in (("modality", modality), ("kind", kind)):
            if value is not None:
                check_label(name, value)
        meta = None if metadata is None else encode_metadata(metadata)
        pay = None if payload is None else check_payload(payload)
        emb = None if embedding is None else self._check_embeddings(one_row(embedding), 1)[0]
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
        with self._io_errors("compact"), self._lock.exclusive():
            self._refresh_locked()
            damaged = list(self._damaged.values())
            if damaged:
                quarantine = self.path / "quarantine"
                make_dirs(quarantine)
                for d in damaged:
                    os.replace(d.path, quarantine / d.path.name)
                fsync_dir(quarantine)
                fsync_dir(self.segments_dir)
                self._damaged.clear()
            if len(self._live_names) > 1 or self._has_tombstones():
                self._merge_locked(0)
            if self.segments_dir.is_dir():
                self._cleanup_locked()

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

    def _list_names(self) -> frozenset[str]:
        try:
            return frozenset(n for n in os.listdir(self.segments_dir) if SegmentName.parse(n) is not None)
        except FileNotFoundError:
            return frozenset()

    def _refresh_locked(self, warn: bool = True) -> None:
        """Bring the in-memory state up to the segment folder; the caller holds the lock."""
        for _ in range(10):  # without a lock (read-only store) a merge may delete a file under us: re-list
            names = self._list_names()
            if names == self._listed:
                return
            try:
                self._read_new(names, warn)
                break
            except FileNotFoundError:
                continue
        else:
            raise StorageError(f"{self.segments_dir} keeps changing while being read; try again")
        for gone in (self._loaded.keys() | self._damaged.keys()) - names:
            self._loaded.pop(gone, None)
            self._damaged.pop(gone, None)
        live = _live(self._loaded[n].name for n in names if n in self._loaded)
        applied = self._live_names
        if live[: len(applied)] == applied and all(
            s.first > applied[-1].last for s in live[len(applied) :] if applied
        ):
            state, new = dict(self._state), live[len(applied) :]  # only newer segments: apply on top
        else:
            state, new = {}, live
        for s in new:
            _apply(state, self._loaded[s.file_name].entries)
        if new or len(live) != len(applied):
            self._view_cache = None
        self._state, self._live_names, self._listed = state, live, names

    def _read_new(self, names: frozenset[str], warn: bool) -> None:
        """Read and verify the segments of ``names`` not read before."""
        for file_name in names - self._loaded.keys() - self._damaged.keys():
            path = self.segments_dir / file_name
            try:
                try:
                    self._loaded[file_name] = read_segment(path, self.dim)
                except FileNotFoundError:
                    raise  # merged away meanwhile: the caller re-lists
                except OSError as e:
                    raise DamagedSegmentError(path, f"cannot be read ({e.strerror or e})") from e
            except DamagedSegmentError as e:
                if self.strict:
                    raise
                self._damaged[file_name] = DamagedSegment(path, e.reason)
                if warn:
                    warnings.warn(
                        f"{e}; skipped (the rest of the store is readable; `arrowdiff memory compact` "
                        "moves it to quarantine/)",
                        StorageWarning,
                        stacklevel=5,
                    )

    def _write(self, make_entries: Callable[[], list[Entry]]) -> None:
        """Append one segment holding ``make_entries()`` (built under the lock, on the latest state)."""
        with self._io_errors("write to"), self._lock.exclusive():
            make_dirs(self.segments_dir)
            self._refresh_locked()
            entries = make_entries()
            seq = self._next_seq()
            name = write_segment(self.segments_dir, entries, self.dim, seq, seq)
            self._loaded[name.file_name] = Segment(name, entries)
            self._listed = None
            self._refresh_locked()
            try:  # housekeeping: the write above is already durable, so a failure here must not fail it
                self._cleanup_locked()
                start = plan_compaction(
                    [len(self._loaded[s.file_name].entries) for s in self._live_names], self.max_segments
                )
                if start is not None:
                    self._merge_locked(start)
            except OSError as e:
                self._listed = None
                warnings.warn(
                    f"memory store {self.path}: merging segments failed ({e}); the write itself is durable, "
                    "the merge is retried on the next write",
                    StorageWarning,
                    stacklevel=4,
                )

    def _merge_locked(self, start: int) -> None:
        """Merge live segments ``start..`` into one; inputs are deleted only after it is durable."""
        inputs = [self._loaded[s.file_name] for s in self._live_names[start:]]
        drop_tombstones = start == 0 and not self._damaged  # a damaged older segment may hold deleted ids
        entries = merge_entries(inputs, drop_tombstones)
        merged = write_segment(
            self.segments_dir, entries, self.dim, inputs[0].name.first, inputs[-1].name.last
        )
        self._loaded[merged.file_name] = Segment(merged, entries)
        self._listed = None
        self._refresh_locked()
        self._cleanup_locked()

    def _cleanup_locked(self) -> None:
        """Delete files no reader needs: merged-away segments and temporary files of dead writers (under
        the exclusive lock no other writer is active, so every temporary file is garbage)."""
        removed = False
        live = {s.file_name for s in self._live_names}
        for file_name in os.listdir(self.segments_dir):
            if file_name.startswith(TMP_PREFIX) or (file_name in self._loaded and file_name not in live):
                (self.segments_dir / file_name).unlink(missing_ok=True)
                self._loaded.pop(file_name, None)
                removed = True
        if removed:
            fsync_dir(self.segments_dir)
            self._listed = self._list_names()

    def _next_seq(self) -> int:
        seqs = [SegmentName.parse(n) for n in self._list_names()]
        quarantine = self.path / "quarantine"
        if quarantine.is_dir():
            seqs += [SegmentName.parse(n) for n in os.listdir(quarantine)]
        return 1 + max((s.last for s in seqs if s is not None), default=0)

    def _has_tombstones(self) -> bool:
        return any(m is None for s in self._live_names for _, m in self._loaded[s.file_name].entries)

    def _require(self, id_: str) -> Memory:
        memory = self._state.get(id_)
        if memory is None:
            raise StorageError(
                f"no memory with id {id_!r} in {self.path} "
                "(ids are 32-hex-digit strings returned by add(); `arrowdiff memory list` shows them)"
            )
        return memory

    def _view(self) -> _View:
        if self._view_cache is None:
            memories = list(self._state.values())
            matrix = (
                np.stack([m.embedding for m in memories])
                if memories
                else np.zeros((0, self.dim), dtype=np.float32)
            )
            matrix.flags.writeable = False
            self._view_cache = _View(
                memories,
                [m.id for m in memories],
                matrix,
                np.array([m.kind for m in memories], dtype=object),
                np.array([m.modality for m in memories], dtype=object),
            )
        return self._view_cache

    def _index_topk(
        self, view: _View, live_names: list[str], q: np.ndarray, k: int, rows: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k through HNSW: a filtered search over-fetches, falls back to exact when too few pass."""
        key = index_key(live_names, self.dim, self._index.config)
        with self._mutex:
            index = self._index.get(key, view.ids, view.matrix)
        fetch = k if rows is None else min(len(view.ids), 4 * k + 32)
        cand, _ = index.search(q, fetch, expansion=None if fetch <= 64 else 4 * fetch)
        if rows is not None:
            cand = cand[np.isin(cand, rows)]
            if len(cand) < min(k, len(rows)):  # the filter is too selective for the graph: exact on it
                sub, _ = exact_topk(view.matrix[rows], q, k)
                cand = rows[sub]
        scores = view.matrix[cand] @ q  # exact cosines of the candidates
        order = np.lexsort((cand, -scores))[:k]
        return cand[order], scores[order]

    def _embedder_fn(self) -> Embedder:
        if self._embedder is None:
            from arrowdiff.encoder import SentenceEncoder

            self._embedder = SentenceEncoder().encode
        return self._embedder

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = self._embedder_fn()(texts)
        return self._check_embeddings(out, len(texts), source="the embedder returned")

    def _check_embeddings(self, emb: Any, n: int, source: str = "embeddings") -> np.ndarray:
        arr = np.asarray(emb, dtype=np.float32)
        if arr.shape != (n, self.dim):
            raise ConfigError(
                f"{source} shape {tuple(arr.shape)}, expected ({n}, {self.dim}): one {self.dim}-d row "
                f"per text (this store holds {self.dim}-d embeddings)"
            )
        if not np.isfinite(arr).all():
            raise ConfigError(f"{source} contain NaN or infinite values; embeddings must be finite")
        norms = np.linalg.norm(arr, axis=1)
        if (norms < 1e-12).any():
            raise ConfigError(
                f"{source} row {int(np.argmin(norms))} is all zeros; it has no direction to normalise"
            )
        out = normalize(arr)
        out.flags.writeable = False
        return out

    def _check_query(self, query: str | np.ndarray) -> None:
        if isinstance(query, str):
            check_text(query, what="query")
        elif np.asarray(query).size != self.dim:
            raise ConfigError(
                f"query embedding shape {tuple(np.asarray(query).shape)}, expected ({self.dim},): "
                "pass a text or one embedding of the store's size"
            )

    def _query_vector(self, query: str | np.ndarray) -> np.ndarray:
        if isinstance(query, str):
            return self._embed([query])[0]
        return self._check_embeddings(np.asarray(query).reshape(1, -1), 1, source="query embedding")[0]


def _live(names: Any) -> list[SegmentName]:
    """The segments to replay, oldest first: those not covered by a merged segment's range."""
    ordered = sorted(names, key=lambda s: (s.first, -s.last, s.digest))
    live: list[SegmentName] = []
    for s in ordered:
        if not live or s.first > live[-1].last:
            live.append(s)
    return live


def _apply(state: dict[str, Memory], entries: list[Entry]) -> None:
    for id_, memory in entries:
        if memory is None:
            state.pop(id_, None)
        else:
            state[id_] = memory


def _matches(m: Memory, kind: str | None, modality: str | None) -> bool:
    return (kind is None or m.kind == kind) and (modality is None or m.modality == modality)
