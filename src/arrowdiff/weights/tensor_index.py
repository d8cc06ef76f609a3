"""The tensor index in a component file's footer (FORMAT.md section 9): where every tensor's bytes lie,
so that readers can locate them with two reads instead of pyarrow. ``build_index`` finds the offsets the
slow way (pyarrow and page headers) for the writer; ``read_index`` and ``parse_index`` accept an index
only when every check passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from arrowdiff.errors import WeightFormatError
from arrowdiff.weights.blobs import Blobs
from arrowdiff.weights.pages import field_offset, find_key_value, key_value_entry
from arrowdiff.weights.schema import (
    BLOB_COLUMNS,
    SUPPORTED_FORMAT_VERSIONS,
    VERSION_KEY,
    check_row,
    corrupt,
)

INDEX_KEY = "arrowdiff.index"  # section 9: where every tensor's bytes lie, so readers can skip pyarrow
INDEX_SHA256_KEY = "arrowdiff.index.sha256"  # hex sha256 of the INDEX_KEY value's bytes
INDEX_VERSION = 1
_VERSION_ENTRY, _INDEX_ENTRY = key_value_entry(VERSION_KEY), key_value_entry(INDEX_KEY)
_INDEX_SHA256_ENTRY = key_value_entry(INDEX_SHA256_KEY)
_KEY_VALUE_FIELD = 5  # FileMetaData.key_value_metadata in parquet.thrift
_KEY_VALUE_HEADER = 0x19  # its compact-protocol field header after field 4: id delta 1, type list (9)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SUPPORTED_VERSION_BYTES = tuple(v.encode() for v in SUPPORTED_FORMAT_VERSIONS)


def read_footer(fd: int, size: int) -> bytes | None:
    """The serialized FileMetaData (the bytes before the last 8), or None if its length is impossible."""
    n = int.from_bytes(os.pread(fd, 4, size - 8), "little")
    if not 0 < n <= size - 12:
        return None
    footer = os.pread(fd, n, size - 8 - n)
    return footer if len(footer) == n else None


def build_index(path: Path) -> dict:
    """The section 9 index of the component file ``path``, found the slow way (pyarrow reads the footer
    and the small columns; page headers are decoded). Raises if a tensor cannot be located in place."""
    path = Path(path)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        footer = read_footer(fd, size)
        if footer is None:
            raise corrupt(path, "bad footer length")
        prefix = field_offset(footer, _KEY_VALUE_FIELD)
        pf = pq.ParquetFile(pa.PythonFile(f, mode="r"))
        names = [n for n in pf.schema_arrow.names if n not in BLOB_COLUMNS]  # 1.0 files lack grouping
        rows = pf.read(columns=names, use_threads=False).to_pylist()
        blobs = Blobs(path, None, fd, pf)
        tensors = []
        for i, row in enumerate(rows):
            spans = {}
            for column, n in zip(BLOB_COLUMNS, check_row(path, row), strict=True):
                offset = blobs.span(i, row["name"], column, n) if blobs.one_per_group else None
                if offset is None:
                    raise RuntimeError(
                        f"{path}: tensor {row['name']!r} column {column!r} is not stored as section 4 says"
                    )
                spans[column] = [offset, n]
            tensors.append({**row, "shape": list(row["shape"]), **spans})
    return {
        "version": INDEX_VERSION,
        "data_end": size - 8 - len(footer),
        "footer_prefix": [prefix, hashlib.sha256(footer[:prefix]).hexdigest()],
        "tensors": tensors,
    }


def _index_entry_ok(path: Path, e: object, data_end: int) -> bool:
    """One tensor of a section 9 index: types, the checks of section 3.4, spans inside the data pages."""
    try:
        if type(e) is not dict or type(e["name"]) is not str or not e["name"]:
            return False
        shape = e["shape"]
        if type(shape) is not list or any(type(d) is not int for d in shape):
            return False
        if type(e["dtype"]) is not str or type(e["method"]) is not str or not _HEX64.fullmatch(e["sha256"]):
            return False
        if type(e["bits"]) is not int or type(e["group_size"]) is not int or type(e["pad"]) is not int:
            return False
        if "grouping" in e and type(e["grouping"]) is not str:
            return False
        for column, n in zip(BLOB_COLUMNS, check_row(path, e), strict=True):
            span = e[column]
            if type(span) is not list or len(span) != 2 or span[1] != n or type(span[0]) is not int:
                return False
            if span[0] < 4 or span[0] + n > data_end:
                return False
    except (KeyError, TypeError, ValueError, OverflowError, WeightFormatError):
        return False
    return True


def parse_index(path: Path, footer: bytes, size: int) -> list[dict] | None:
    """The tensors of the section 9 index in ``footer`` (the file is ``size`` bytes), every check passed;
    None when the file has no index or any check fails: the caller then reads the file through pyarrow,
    which reports what is wrong, if anything is."""
    found, version = find_key_value(footer, _INDEX_ENTRY), find_key_value(footer, _VERSION_ENTRY)
    digest = find_key_value(footer, _INDEX_SHA256_ENTRY)
    if found is None or version is None or digest is None:
        return None
    if footer[version[1] : version[2]] not in _SUPPORTED_VERSION_BYTES:
        return None
    text = memoryview(footer)[found[1] : found[2]]
    if hashlib.sha256(text).hexdigest().encode() != footer[digest[1] : digest[2]]:
        return None  # the index is damaged (its own checksum): every byte of it is covered
    try:
        index = json.loads(bytes(text))
    except ValueError:  # invalid JSON or UTF-8
        return None
    if type(index) is not dict or type(index.get("version")) is not int or index["version"] != INDEX_VERSION:
        return None
    data_end, prefix, tensors = size - 8 - len(footer), index.get("footer_prefix"), index.get("tensors")
    if type(index.get("data_end")) is not int or index["data_end"] != data_end or type(tensors) is not list:
        return None
    if type(prefix) is not list or len(prefix) != 2 or type(prefix[0]) is not int:
        return None
    # the index describes this very layout: the footer up to the key-value metadata (schema, row groups,
    # every column chunk's offsets and sizes) is the one the index was made for, and the three key-value
    # entries lie after it (so none is a look-alike inside a tensor name's statistics); a tool that rewrote
    # the file and carried the key-value metadata over fails this check
    if not 0 < prefix[0] <= min(found[0], version[0], digest[0]) or footer[prefix[0]] != _KEY_VALUE_HEADER:
        return None
    if hashlib.sha256(memoryview(footer)[: prefix[0]]).hexdigest() != prefix[1]:
        return None
    names = set()
    for e in tensors:
        if not _index_entry_ok(path, e, data_end) or e["name"] in names:
            return None
        names.add(e["name"])
    return tensors


def read_index(path: Path) -> list[dict] | None:
    """The section 9 index of the component file ``path`` as a reader sees it: one dict per tensor, in
    file order, every check passed; None if the file has none or it does not check out."""
    path = Path(path)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if size < 12 or os.pread(fd, 4, 0) != b"PAR1" or os.pread(fd, 4, size - 4) != b"PAR1":
            return None
        footer = read_footer(fd, size)
        return None if footer is None else parse_index(path, footer, size)
