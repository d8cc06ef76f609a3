"""The segment folder of a store replayed into its current state: listing, reading and verifying segments,
publishing new ones, merging and cleaning up (FORMAT.md, sections 4 and 5).

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
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from arrowdiff.errors import StorageError
from arrowdiff.memory.compaction import merge_entries, plan_compaction
from arrowdiff.memory.durable import TMP_PREFIX, fsync_dir, make_dirs
from arrowdiff.memory.records import Memory
from arrowdiff.memory.search import View
from arrowdiff.memory.segments import (
    DamagedSegmentError,
    Entry,
    Segment,
    SegmentName,
    read_segment,
    write_segment,
)


class StorageWarning(UserWarning):
    """A damaged segment was skipped while opening a store."""


@dataclass(frozen=True)
class DamagedSegment:
    """A segment file that failed verification, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class SegmentLog:
    """The segments of one store folder and the state they replay to (id -> memory, in stored order).

    Not thread- or process-safe by itself: the owning ``ArrowStorage`` holds its lock around every call,
    shared for the ``*_locked`` methods that read and exclusive for those that write.
    """

    def __init__(self, path: Path, dim: int, strict: bool) -> None:
        self.path = path  # the store folder
        self.segments_dir = path / "segments"
        self.dim = dim
        self.strict = strict  # raise StorageError on a damaged segment instead of skipping it
        self.listed: frozenset[str] | None = None  # segment file names at the last refresh
        self.loaded: dict[str, Segment] = {}  # healthy segments read so far, by file name
        self.damaged: dict[str, DamagedSegment] = {}
        self.live_names: list[SegmentName] = []  # replayed segments, oldest first
        self.state: dict[str, Memory] = {}  # id -> memory, in stored order
        self._view: View | None = None

    def view(self) -> View:
        """The current state as one ``View`` (built on first use after the live segments changed)."""
        if self._view is None:
            self._view = View.of(list(self.state.values()), self.dim)
        return self._view

    def forget(self) -> None:
        """Forget every segment read so far: the next refresh re-reads and re-hashes every file."""
        self.loaded.clear()
        self.damaged.clear()
        self.listed = None

    def list_names(self) -> frozenset[str]:
        try:
            return frozenset(n for n in os.listdir(self.segments_dir) if SegmentName.parse(n) is not None)
        except FileNotFoundError:
            return frozenset()

    def refresh_locked(self, warn: bool = True) -> None:
        """Bring the in-memory state up to the segment folder; the caller holds the lock."""
        for _ in range(10):  # without a lock (read-only store) a merge may delete a file under us: re-list
            names = self.list_names()
            if names == self.listed:
                return
            try:
                self._read_new(names, warn)
                break
            except FileNotFoundError:
                continue
        else:
            raise StorageError(f"{self.segments_dir} keeps changing while being read; try again")
        for gone in (self.loaded.keys() | self.damaged.keys()) - names:
            self.loaded.pop(gone, None)
            self.damaged.pop(gone, None)
        live = _live(self.loaded[n].name for n in names if n in self.loaded)
        applied = self.live_names
        if live[: len(applied)] == applied and all(
            s.first > applied[-1].last for s in live[len(applied) :] if applied
        ):
            state, new = dict(self.state), live[len(applied) :]  # only newer segments: apply on top
        else:
            state, new = {}, live
        for s in new:
            _apply(state, self.loaded[s.file_name].entries)
        if new or len(live) != len(applied):
            self._view = None
        self.state, self.live_names, self.listed = state, live, names

    def _read_new(self, names: frozenset[str], warn: bool) -> None:
        """Read and verify the segments of ``names`` not read before."""
        for file_name in names - self.loaded.keys() - self.damaged.keys():
            path = self.segments_dir / file_name
            try:
                try:
                    self.loaded[file_name] = read_segment(path, self.dim)
                except FileNotFoundError:
                    raise  # merged away meanwhile: the caller re-lists
                except OSError as e:
                    raise DamagedSegmentError(path, f"cannot be read ({e.strerror or e})") from e
            except DamagedSegmentError as e:
                if self.strict:
                    raise
                self.damaged[file_name] = DamagedSegment(path, e.reason)
                if warn:
                    warnings.warn(
                        f"{e}; skipped (the rest of the store is readable; `arrowdiff memory compact` "
                        "moves it to quarantine/)",
                        StorageWarning,
                        stacklevel=5,
                    )

    def append_locked(self, entries: list[Entry], max_segments: int) -> None:
        """Publish ``entries`` as the newest segment (the caller has refreshed under the exclusive lock),
        then merge when more than ``max_segments`` segments are live."""
        seq = self.next_seq()
        self.publish_locked(entries, seq, seq)
        self.refresh_locked()
        try:  # housekeeping: the write above is already durable, so a failure here must not fail it
            self.cleanup_locked()
            start = plan_compaction(
                [len(self.loaded[s.file_name].entries) for s in self.live_names], max_segments
            )
            if start is not None:
                self.merge_locked(start)
        except OSError as e:
            self.listed = None
            warnings.warn(
                f"memory store {self.path}: merging segments failed ({e}); the write itself is durable, "
                "the merge is retried on the next write",
                StorageWarning,
                stacklevel=5,
            )

    def publish_locked(self, entries: list[Entry], first: int, last: int) -> None:
        """Write one segment of ``entries`` covering ``first..last`` durably; the next refresh replays it."""
        name = write_segment(self.segments_dir, entries, self.dim, first, last)
        self.loaded[name.file_name] = Segment(name, entries)
        self.listed = None

    def merge_locked(self, start: int) -> None:
        """Merge live segments ``start..`` into one; inputs are deleted only after it is durable."""
        inputs = [self.loaded[s.file_name] for s in self.live_names[start:]]
        drop_tombstones = start == 0 and not self.damaged  # a damaged older segment may hold deleted ids
        entries = merge_entries(inputs, drop_tombstones)
        self.publish_locked(entries, inputs[0].name.first, inputs[-1].name.last)
        self.refresh_locked()
        self.cleanup_locked()

    def cleanup_locked(self) -> None:
        """Delete files no reader needs: merged-away segments and temporary files of dead writers (under
        the exclusive lock no other writer is active, so every temporary file is garbage)."""
        removed = False
        live = {s.file_name for s in self.live_names}
        for file_name in os.listdir(self.segments_dir):
            if file_name.startswith(TMP_PREFIX) or (file_name in self.loaded and file_name not in live):
                (self.segments_dir / file_name).unlink(missing_ok=True)
                self.loaded.pop(file_name, None)
                removed = True
        if removed:
            fsync_dir(self.segments_dir)
            self.listed = self.list_names()

    def quarantine_locked(self) -> None:
        """Move the damaged segments to ``quarantine/`` (bytes unchanged), durably."""
        damaged = list(self.damaged.values())
        if damaged:
            quarantine = self.path / "quarantine"
            make_dirs(quarantine)
            for d in damaged:
                os.replace(d.path, quarantine / d.path.name)
            fsync_dir(quarantine)
            fsync_dir(self.segments_dir)
            self.damaged.clear()

    def next_seq(self) -> int:
        seqs = [SegmentName.parse(n) for n in self.list_names()]
        quarantine = self.path / "quarantine"
        if quarantine.is_dir():
            seqs += [SegmentName.parse(n) for n in os.listdir(quarantine)]
        return 1 + max((s.last for s in seqs if s is not None), default=0)

    def has_tombstones(self) -> bool:
        return any(m is None for s in self.live_names for _, m in self.loaded[s.file_name].entries)


def _live(names: Iterable[SegmentName]) -> list[SegmentName]:
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
