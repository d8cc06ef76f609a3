"""What a component file holds (FORMAT.md sections 1, 3 and 4): the format version, the schema, the
writer settings that make zero-copy views possible, the per-tensor checksum, and the checks every row must
pass (section 3.4). Shared by the writer, the reader and the tensor index; no file I/O here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from arrowdiff.errors import WeightFormatError
from arrowdiff.weights.quantize import FLOAT_BITS, GROUPINGS, METHODS, SUPPORTED_BITS, layout

FORMAT_VERSION = "1.1"
SUPPORTED_FORMAT_VERSIONS = ("1.0", "1.1")
VERSION_KEY = "arrowdiff.format_version"
DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
MAX_VALUE_BYTES = 2**31 - 2**16  # a Parquet page and a PLAIN length prefix are int32 (section 4)

# section 3: the schema, in column order
SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("shape", pa.list_(pa.field("element", pa.int64(), nullable=False)), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("bits", pa.int8(), nullable=False),
        pa.field("group_size", pa.int32(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("payload", pa.large_binary(), nullable=False),
        pa.field("scales", pa.large_binary(), nullable=False),
        pa.field("zeros", pa.large_binary(), nullable=False),
        pa.field("pad", pa.int32(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("grouping", pa.string(), nullable=False),  # 1.1: "rows" or "last" (a copied 1.0 tensor)
    ],
    metadata={VERSION_KEY: FORMAT_VERSION},
)
SCHEMA_1_0 = pa.schema(list(SCHEMA)[:-1], metadata={VERSION_KEY: "1.0"})  # no grouping: all "last"
BLOB_COLUMNS = ("payload", "scales", "zeros")
SMALL_COLUMNS = tuple(n for n in SCHEMA.names if n not in BLOB_COLUMNS)


def schema_for(version: str) -> pa.Schema:
    """The schema of a file of ``version`` (one of SUPPORTED_FORMAT_VERSIONS)."""
    return SCHEMA_1_0 if version == "1.0" else SCHEMA


def small_columns(version: str) -> tuple[str, ...]:
    return tuple(n for n in schema_for(version).names if n not in BLOB_COLUMNS)


def row_grouping(row: dict) -> str:
    """A row's grouping: its ``grouping`` column, or "last" for a format 1.0 row (which has none)."""
    return row.get("grouping", "last")


# section 4: the writer settings that make zero-copy views possible
WRITER_SETTINGS = {
    "version": "2.6",
    "data_page_version": "2.0",
    "compression": "none",
    "use_dictionary": False,
    "column_encoding": {c: "PLAIN" for c in BLOB_COLUMNS},
    "write_statistics": ["name"],
}


def checksum(payload: np.ndarray, scales: np.ndarray, zeros: np.ndarray) -> str:
    """Hex sha256 of the payload, then scales, then zeros bytes (section 3, column ``sha256``)."""
    h = hashlib.sha256()
    for part in (payload, scales, zeros):
        h.update(np.ascontiguousarray(part).reshape(-1).view(np.uint8))
    return h.hexdigest()


def corrupt(path: Path, what: str) -> WeightFormatError:
    return WeightFormatError(f"{path}: {what}; the file is truncated or corrupt: re-export or copy it again")


def check_row(path: Path, row: dict) -> tuple[int, int, int]:
    """Validate one row's small columns; return the expected (payload, scales, zeros) byte counts."""
    name, bits, method = row["name"], row["bits"], row["method"]
    if bits not in SUPPORTED_BITS:
        raise WeightFormatError(
            f"{path}: tensor {name!r} has bits={bits}; this arrowdiff reads {SUPPORTED_BITS}: "
            "upgrade arrowdiff or re-export the model"
        )
    if row["dtype"] not in DTYPES:
        raise WeightFormatError(f"{path}: tensor {name!r} has unknown dtype {row['dtype']!r}; re-export it")
    if any(d < 0 for d in row["shape"]):
        raise corrupt(path, f"tensor {name!r} has negative shape {row['shape']}")
    shape = tuple(row["shape"])
    grouping = row_grouping(row)
    if grouping not in GROUPINGS:
        raise WeightFormatError(
            f"{path}: tensor {name!r} has grouping={grouping!r}; this arrowdiff reads {GROUPINGS}: "
            "upgrade arrowdiff or re-export the model"
        )
    if bits in FLOAT_BITS:
        if method != "none" or row["pad"] != 0:
            raise corrupt(path, f"tensor {name!r} stores raw {bits}-bit floats but method={method!r}")
        return layout(shape, bits, 1)[0], 0, 0
    if method not in METHODS or row["group_size"] < 1:
        raise WeightFormatError(
            f"{path}: tensor {name!r} has method={method!r}, group_size={row['group_size']}; "
            f"this arrowdiff reads methods {METHODS}: upgrade arrowdiff or re-export the model"
        )
    n_payload, n_groups, pad = layout(shape, bits, row["group_size"], grouping)
    if row["pad"] != pad:
        raise corrupt(path, f"tensor {name!r} records pad={row['pad']} but its shape implies {pad}")
    return n_payload, 2 * n_groups, n_groups * (2 if method == "hqq" else 1)
