"""Reading a component file (FORMAT.md section 6): memory-map it and view each tensor's bytes in place,
located through the footer's tensor index (section 9) when the file has one that checks out, else through
pyarrow. The result is lazy ``StoredTensor``s; nothing here unpickles anything.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from arrowdiff.errors import WeightFormatError
from arrowdiff.weights.blobs import Blobs
from arrowdiff.weights.schema import (
    BLOB_COLUMNS,
    SUPPORTED_FORMAT_VERSIONS,
    VERSION_KEY,
    check_row,
    corrupt,
    row_grouping,
    schema_for,
    small_columns,
)
from arrowdiff.weights.stored_tensor import StoredTensor
from arrowdiff.weights.tensor_index import parse_index, read_footer


def read_component(path: Path, verify: bool = False) -> dict[str, StoredTensor]:
    """Open a component file and return lazy, zero-copy tensors by name (in file order).

    With ``verify=True`` every checksum is checked now; otherwise on each tensor's first ``to_tensor``.
    Files with a valid section 9 index are opened without pyarrow; others (older files, files rewritten by
    other tools) through pyarrow.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightFormatError(f"{path}: component file not found; check the path or re-export the model")
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if size < 12:
            raise corrupt(path, f"only {size} bytes, too short for Parquet")
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)  # private mapping: never writes the file
        # magic bytes, footer, small columns and page headers are read, not mapped: opening a file maps
        # none of its pages, so resident memory grows only as tensors are used
        if os.pread(fd, 4, 0) != b"PAR1" or os.pread(fd, 4, size - 4) != b"PAR1":
            raise corrupt(path, "no Parquet magic bytes at start and end")
        footer = read_footer(fd, size)
        entries = None if footer is None else parse_index(path, footer, size)
        if entries is None:
            out = _read_with_pyarrow(path, f, fd, mm)
        else:
            out = {e["name"]: _indexed_tensor(path, mm, e) for e in entries}
    if verify:
        for st in out.values():
            st.verify()
    return out


def _indexed_tensor(path: Path, mm: mmap.mmap, e: dict) -> StoredTensor:
    """A tensor from a checked index entry (section 9): views into ``mm`` at the indexed spans."""
    cells = [np.frombuffer(mm, np.uint8, count=e[c][1], offset=e[c][0]) for c in BLOB_COLUMNS]
    return StoredTensor(
        e["name"], path, tuple(e["shape"]), e["dtype"], e["bits"], e["group_size"], e["method"], e["pad"],
        e["sha256"], True, *cells, grouping=row_grouping(e),
    )  # fmt: skip


def _read_with_pyarrow(path: Path, f: object, fd: int, mm: mmap.mmap) -> dict[str, StoredTensor]:
    """Sections 6.2 and 6.3: pyarrow reads the footer and the small columns; blobs are viewed in place
    where the file follows section 4, copied through pyarrow otherwise."""
    try:
        pf = pq.ParquetFile(pa.PythonFile(f, mode="r"))
        kv = pf.metadata.metadata or {}
        version = kv.get(VERSION_KEY.encode())
        if version is None:
            raise WeightFormatError(f"{path}: no '{VERSION_KEY}' key: not an ArrowQuant file; re-export it")
        if version.decode() not in SUPPORTED_FORMAT_VERSIONS:
            raise WeightFormatError(
                f"{path}: format version {version.decode()!r} is not one this arrowdiff reads "
                f"{SUPPORTED_FORMAT_VERSIONS}; upgrade arrowdiff or re-export the model"
            )
        expected = schema_for(version.decode()).names
        if pf.schema_arrow.names != expected:
            raise WeightFormatError(f"{path}: columns {pf.schema_arrow.names} differ from {expected}")
        columns = list(small_columns(version.decode()))
        rows = pf.read(columns=columns, use_threads=False).to_pylist()  # tiny: no pool
    except (pa.ArrowException, OSError) as e:
        raise corrupt(path, f"pyarrow cannot read it ({e})") from e
    blobs = Blobs(path, mm, fd, pf)
    out: dict[str, StoredTensor] = {}
    for i, row in enumerate(rows):
        sizes = check_row(path, row)
        name = row["name"]
        try:
            cells = [blobs.get(i, name, c, n) for c, n in zip(BLOB_COLUMNS, sizes, strict=True)]
        except (pa.ArrowException, OSError) as e:
            raise corrupt(path, f"pyarrow cannot read tensor {name!r} ({e})") from e
        if name in out:
            raise corrupt(path, f"tensor {name!r} appears twice")
        out[name] = StoredTensor(
            name, path, tuple(row["shape"]), row["dtype"], row["bits"], row["group_size"], row["method"],
            row["pad"], row["sha256"], all(z for _, z in cells), cells[0][0], cells[1][0], cells[2][0],
            grouping=row_grouping(row),
        )  # fmt: skip
    return out
