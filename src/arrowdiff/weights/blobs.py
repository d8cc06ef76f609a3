"""Blob cells (``payload``, ``scales``, ``zeros``) of a component file: located in place through their
data page headers where the file follows section 4 (section 6), else decoded and copied through pyarrow.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from arrowdiff.weights.pages import locate_single_value
from arrowdiff.weights.schema import SCHEMA, corrupt

_HEADER_READ = 4096 + 64  # bytes read to decode a page header (pages.py reads headers of <= 4096 bytes)


class Blobs:
    """Finds blob cells: views into ``mm`` where the file follows section 4, pyarrow copies otherwise.

    Page headers are read with ``os.pread`` on ``fd``, not through the mapping, so locating a tensor maps
    none of the file's pages: they are faulted in only when the tensor's values are used.
    """

    def __init__(self, path: Path, mm: mmap.mmap | None, fd: int, pf: pq.ParquetFile) -> None:
        self.path, self.mm, self.fd, self.pf = path, mm, fd, pf
        self.size = os.fstat(fd).st_size
        self.md, self.schema = pf.metadata, pf.schema  # looked up once, not per cell
        md = self.md
        self.one_per_group = all(md.row_group(i).num_rows == 1 for i in range(md.num_row_groups))
        self._decoded: dict[str, pa.ChunkedArray] = {}  # fallback: whole columns, decoded once

    def get(self, row: int, name: str, column: str, n: int) -> tuple[np.ndarray, bool]:
        if self.one_per_group and self.mm is not None:
            offset = self.span(row, name, column, n)
            if offset is not None:
                return np.frombuffer(self.mm, dtype=np.uint8, count=n, offset=offset), True
        if column not in self._decoded:
            self._decoded[column] = self.pf.read(columns=[column]).column(0)
        value = self._decoded[column][row].as_py()
        if len(value) != n:
            raise corrupt(
                self.path, f"tensor {name!r} column {column!r} holds {len(value)} bytes, expected {n}"
            )
        return np.frombuffer(value, dtype=np.uint8).copy(), False

    def span(self, rg: int, name: str, column: str, n: int) -> int | None:
        """The file offset of the ``n`` value bytes of ``column`` in row group ``rg`` (section 6), or None
        if that cell is not stored as section 4 says."""
        leaf = SCHEMA.names.index(column)  # every column before the blobs is one Parquet leaf
        cc = self.md.row_group(rg).column(leaf)
        if cc.path_in_schema != column:
            return None
        start = cc.data_page_offset
        end = start + cc.total_compressed_size
        if end > self.size:
            raise corrupt(self.path, f"tensor {name!r} column {column!r} ends at byte {end}, past the end")
        if cc.compression != "UNCOMPRESSED" or cc.has_dictionary_page:
            return None
        max_def = self.schema.column(leaf).max_definition_level
        head = os.pread(self.fd, min(end - start, _HEADER_READ), start)  # header + length prefix
        span = locate_single_value(head, 0, end - start, n, max_def)
        return None if span is None else start + span.offset
