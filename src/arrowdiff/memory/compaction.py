"""Which segments to merge, and what the merge holds (FORMAT.md, section 5). Pure functions, no I/O.

The policy is the size-tiered rule of log-structured merge trees (O'Neil et al. 1996, "The
Log-Structured Merge-Tree"; tiered as in Cassandra and RocksDB's universal compaction): once there are
more than ``max_segments`` live segments, merge the newest run of segments that is at least as large as
the segment just before it. Each record is then rewritten O(log N) times, while a store made by single
``add()`` calls keeps a bounded number of files.
"""

from __future__ import annotations

from collections.abc import Sequence

from arrowdiff.memory.records import Memory
from arrowdiff.memory.segments import Entry, Segment


def plan_compaction(sizes: Sequence[int], max_segments: int) -> int | None:
    """Index of the first of the newest segments to merge (they are merged up to the last), or None.

    ``sizes`` are the entry counts of the live segments, oldest first. Walking back from the newest, the
    run grows while each next-older segment holds at most as many entries as the run so far; the two
    newest are merged at least.
    """
    n = len(sizes)
    if n <= max_segments or n < 2:
        return None
    start, run = n - 2, sizes[n - 1] + sizes[n - 2]
    while start > 0 and sizes[start - 1] <= run:
        start -= 1
        run += sizes[start]
    return start


def merge_entries(segments: Sequence[Segment], drop_tombstones: bool) -> list[Entry]:
    """The entries of one segment equivalent to replaying ``segments`` in order.

    Each id keeps the position of its first entry and the value of its last (an update is a full record,
    so the last put is the whole truth). Tombstones are kept unless the merge starts at the oldest data
    (``drop_tombstones``): an older segment may still hold the record they delete.
    """
    latest: dict[str, Memory | None] = {}
    for segment in segments:
        for id_, memory in segment.entries:
            latest[id_] = memory
    return [(i, m) for i, m in latest.items() if m is not None or not drop_tombstones]
