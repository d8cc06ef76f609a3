"""The POSIX steps that make a write durable and writers exclusive.

A file is published by writing it under a temporary name, ``fsync``-ing it, renaming it to its final
name (``rename`` is atomic on POSIX file systems) and ``fsync``-ing the directory, so that after a crash
the final name either does not exist or names the complete file (the pattern SQLite, LevelDB and
git use). Writers are serialised with ``flock`` on a lock file, which the kernel releases when its holder
dies, even under ``kill -9``: a crashed writer never leaves the store locked.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"  # files being written; any left behind belong to a writer that died


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """``mkdir -p`` that also makes each newly created level durable in its parent."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        fsync_dir(d.parent)


def write_atomic(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/name`` durably and atomically; return the final path."""
    tmp = folder / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    final = folder / name
    os.rename(tmp, final)
    fsync_dir(folder)
    return final


class StoreLock:
    """A reader/writer lock shared by every process (``flock`` on ``path``) and every thread (an RLock)
    that opens the same store. ``exclusive()`` is re-entrant within one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.thread_lock = threading.RLock()  # also guards the owner's in-memory state
        self._depth = 0  # exclusive() nesting in the owning thread

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self.thread_lock:
            if self._depth:  # already held by this thread
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            make_dirs(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until the other writer is done
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Held while reading segment files, so that no compaction deletes them mid-read. A store that
        cannot be locked (a read-only copy without a lock file) is read without it."""
        with self.thread_lock:
            if self._depth:
                yield
                return
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                try:
                    fd = os.open(self.path, os.O_RDONLY)
                except OSError:
                    yield
                    return
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                yield
            finally:
                os.close(fd)
