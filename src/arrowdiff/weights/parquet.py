"""ArrowQuant component files: one Parquet file of tensors, one row and one row group per tensor.

The layout is specified in ``FORMAT.md`` (next to this file); section numbers below refer to it. Reading
memory-maps the file and views each tensor's bytes in place (section 6): nothing is decoded or copied until
:meth:`StoredTensor.to_tensor` dequantizes it. The bytes are located through the tensor index in the
footer's key-value metadata (section 9) when the file has one that checks out, else through pyarrow.
Nothing here unpickles anything.

This module is the public entry point; the implementation lives beside it, one concept per module:

- ``schema``: format version, schema, writer settings, checksum and the row checks (sections 1, 3, 4)
- ``stored_tensor``: ``StoredTensor``, a lazy tensor viewing the file's memory map
- ``blobs``: locating blob cells in place through their page headers, or copying them through pyarrow
- ``tensor_index``: the footer's tensor index, built for writers and checked for readers (section 9)
- ``component_writer``: ``write_component`` and the atomic-write helpers
- ``component_reader``: ``read_component``
"""

from __future__ import annotations

from arrowdiff.weights.component_reader import read_component
from arrowdiff.weights.component_writer import fsync_dir, tmp_path, write_atomically, write_component
from arrowdiff.weights.schema import (
    BLOB_COLUMNS,
    DTYPES,
    FORMAT_VERSION,
    MAX_VALUE_BYTES,
    SCHEMA,
    SMALL_COLUMNS,
    SUPPORTED_FORMAT_VERSIONS,
    VERSION_KEY,
    WRITER_SETTINGS,
    checksum,
)
from arrowdiff.weights.stored_tensor import StoredTensor
from arrowdiff.weights.tensor_index import INDEX_KEY, INDEX_SHA256_KEY, INDEX_VERSION, build_index, read_index

__all__ = [
    "BLOB_COLUMNS",
    "DTYPES",
    "FORMAT_VERSION",
    "INDEX_KEY",
    "INDEX_SHA256_KEY",
    "INDEX_VERSION",
    "MAX_VALUE_BYTES",
    "SCHEMA",
    "SMALL_COLUMNS",
    "SUPPORTED_FORMAT_VERSIONS",
    "VERSION_KEY",
    "WRITER_SETTINGS",
    "StoredTensor",
    "build_index",
    "checksum",
    "fsync_dir",
    "read_component",
    "read_index",
    "tmp_path",
    "write_atomically",
    "write_component",
]
