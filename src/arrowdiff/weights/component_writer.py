"""Writing a component file (FORMAT.md sections 3, 4 and 9): one row and one row group per tensor, written
atomically (temporary sibling, fsync, rename, fsync the directory) with the tensor index in the footer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from arrowdiff.errors import ConfigError
from arrowdiff.weights.policy import QuantPolicy
from arrowdiff.weights.quantize import QuantizedTensor, quantize
from arrowdiff.weights.schema import DTYPES, MAX_VALUE_BYTES, SCHEMA, WRITER_SETTINGS, checksum
from arrowdiff.weights.stored_tensor import StoredTensor
from arrowdiff.weights.tensor_index import INDEX_KEY, INDEX_SHA256_KEY, build_index, read_index


def _blob_array(data: torch.Tensor) -> pa.Array:
    """A 1-value large_binary array over ``data``'s bytes without copying them in Python."""
    buf = pa.py_buffer(data.contiguous().view(torch.uint8).numpy())
    offsets = pa.py_buffer(np.array([0, buf.size], dtype=np.int64))
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, buf])


def _row(path: Path, name: object, tensor: object, policy: QuantPolicy) -> pa.Table:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: tensor names must be non-empty strings, got {name!r}")
    if isinstance(tensor, StoredTensor):  # copied verbatim: its own bits, codes and checksum
        tensor.verify()
        return _table(name, tensor.quantized(), tensor.dtype, tensor.sha256)
    if isinstance(tensor, QuantizedTensor):  # already quantized elsewhere (e.g. a GGUF block carried over)
        q = tensor
        digest = checksum(
            q.packed.numpy(), q.scales.view(torch.uint8).numpy(), q.zeros.view(torch.uint8).numpy()
        )
        return _table(name, q, "float32", digest)
    if not isinstance(tensor, torch.Tensor):
        raise ConfigError(
            f"{path}: tensor {name!r} is a {type(tensor).__name__}, "
            "expected a torch.Tensor, StoredTensor or QuantizedTensor"
        )
    dtype = str(tensor.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise ConfigError(
            f"{path}: tensor {name!r} has dtype {dtype}; ArrowQuant stores {sorted(DTYPES)}; convert it, "
            "or keep non-float buffers out of the state dict (register_buffer(..., persistent=False))"
        )
    bits = policy.bits_for(name, tensor)
    try:
        q = quantize(tensor, bits, policy.group_size, policy.method)
    except ConfigError as e:
        raise ConfigError(f"{path}: tensor {name!r}: {e}") from e
    if q.packed.numel() > MAX_VALUE_BYTES:
        raise ConfigError(
            f"{path}: tensor {name!r} needs {q.packed.numel()} payload bytes, over Parquet's 2 GiB page "
            "limit; store it at fewer bits or split it into several tensors"
        )
    digest = checksum(q.packed.numpy(), q.scales.view(torch.uint8).numpy(), q.zeros.view(torch.uint8).numpy())
    return _table(name, q, dtype, digest)


def _table(name: str, q: QuantizedTensor, dtype: str, digest: str) -> pa.Table:
    cols = {
        "name": pa.array([name], pa.string()),
        "shape": pa.array([list(q.shape)], SCHEMA.field("shape").type),
        "dtype": pa.array([dtype], pa.string()),
        "bits": pa.array([q.bits], pa.int8()),
        "group_size": pa.array([q.group_size], pa.int32()),
        "method": pa.array([q.method], pa.string()),
        "payload": _blob_array(q.packed),
        "scales": _blob_array(q.scales),
        "zeros": _blob_array(q.zeros),
        "pad": pa.array([q.pad], pa.int32()),
        "sha256": pa.array([digest], pa.string()),
        "grouping": pa.array([q.grouping], pa.string()),
    }
    return pa.Table.from_arrays([cols[n] for n in SCHEMA.names], schema=SCHEMA)


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path(path: Path) -> Path:
    """The temporary sibling a file is written to before the atomic rename."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomically(path: Path, fill: Callable[[Path], None]) -> None:
    """``fill(tmp)`` writes the temporary sibling; then fsync it, rename it over ``path`` and fsync the
    directory. On any failure the temporary file is removed and ``path`` is untouched."""
    tmp = tmp_path(path)
    try:
        fill(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_component(
    path: Path, tensors: Mapping[str, torch.Tensor | StoredTensor], policy: QuantPolicy
) -> None:
    """Write ``tensors`` to the component file ``path`` atomically (tmp file, fsync, rename).

    Tensors are stored as ``policy`` says; a :class:`StoredTensor` is copied as stored (its checksum is
    verified first), so tensors can be carried over from another file without a lossy round trip, and a
    :class:`QuantizedTensor` (codes made elsewhere, e.g. a GGUF's blocks) is written as given.

    The file is written twice (section 9): once plainly, to find where every tensor's bytes landed, then
    again from the first file's row groups with that index added to the footer. The data pages precede
    the footer, so the second write must reproduce them byte for byte; this is checked, not assumed.
    """
    path = Path(path)
    if not isinstance(policy, QuantPolicy):
        raise ConfigError(f"policy must be a QuantPolicy, got {type(policy).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> None:
        plain = tmp.with_name(f"{tmp.name}.plain")
        try:
            with pq.ParquetWriter(plain, SCHEMA, **WRITER_SETTINGS) as writer:
                for name, tensor in tensors.items():
                    writer.write_table(_row(path, name, tensor, policy))  # one row group per tensor
            _write_indexed(path, plain, tmp)
        finally:
            plain.unlink(missing_ok=True)

    write_atomically(path, fill)


def _write_indexed(path: Path, plain: Path, out: Path) -> None:
    """Copy the row groups of ``plain`` into ``out`` with the section 9 index in its footer; check that
    ``out``'s layout is ``plain``'s (same footer up to the key-value metadata, same page-decoded offsets)
    and that the index reads back."""
    index = build_index(plain)
    text = json.dumps(index, separators=(",", ":"), allow_nan=False)
    with pq.ParquetFile(plain) as pf, pq.ParquetWriter(out, SCHEMA, **WRITER_SETTINGS) as writer:
        for i in range(pf.metadata.num_row_groups):
            writer.write_table(pf.read_row_group(i, use_threads=False))  # one tensor in memory at a time
        digest = hashlib.sha256(text.encode()).hexdigest()
        writer.add_key_value_metadata({INDEX_KEY: text, INDEX_SHA256_KEY: digest})
    again = build_index(out)
    if again != index:
        raise RuntimeError(
            f"{path}: rewriting the file with its index moved the tensors' bytes (pyarrow "
            f"{pa.__version__} is not deterministic here); nothing was written. Please report this"
        )
    if read_index(out) != index["tensors"]:
        raise RuntimeError(f"{path}: the index written to the footer does not read back; nothing was written")
