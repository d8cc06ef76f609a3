"""ArrowQuant component files: one Parquet file of tensors, one row and one row group per tensor.

The layout is specified in ``FORMAT.md`` (next to this file); section numbers below refer to it. Reading
memory-maps the file and views each tensor's bytes in place (section 6): nothing is decoded or copied until
:meth:`StoredTensor.to_tensor` dequantizes it. Nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.weights.pages import locate_single_value
from arrowdiff.weights.policy import QuantPolicy
from arrowdiff.weights.quantize import (
    FLOAT_BITS,
    METHODS,
    SUPPORTED_BITS,
    QuantizedTensor,
    dequantize,
    layout,
    quantize,
)

FORMAT_VERSION = "1.0"
SUPPORTED_FORMAT_VERSIONS = ("1.0",)
VERSION_KEY = "arrowdiff.format_version"
DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
_HEADER_READ = 4096 + 64  # bytes read to decode a page header (pages.py reads headers of <= 4096 bytes)
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
    ],
    metadata={VERSION_KEY: FORMAT_VERSION},
)
BLOB_COLUMNS = ("payload", "scales", "zeros")
SMALL_COLUMNS = tuple(n for n in SCHEMA.names if n not in BLOB_COLUMNS)
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


def _torch_view(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A torch view of uint8 bytes as ``dtype``, sharing memory (no copy)."""
    t = torch.from_numpy(a)
    return t.view(dtype) if t.numel() else torch.empty(0, dtype=dtype)


@dataclass(eq=False)
class StoredTensor:
    """One tensor of a component file, held as views into the file's memory map; lazy and uncached."""

    name: str
    file: Path
    shape: tuple[int, ...]
    dtype: str  # the original dtype, e.g. "float32" (section 3)
    bits: int
    group_size: int
    method: str
    pad: int
    sha256: str
    zero_copy: bool  # True when payload/scales/zeros are views into the mmap, False after a pyarrow fallback
    _payload: np.ndarray = field(repr=False)
    _scales: np.ndarray = field(repr=False)
    _zeros: np.ndarray = field(repr=False)
    _verified: bool = field(default=False, repr=False)

    @property
    def payload(self) -> np.ndarray:
        """The payload bytes (uint8), a read-only view into the memory-mapped file."""
        v = self._payload.view()
        v.flags.writeable = False
        return v

    @property
    def nbytes(self) -> int:
        """Bytes this tensor occupies in the file (payload + scales + zeros)."""
        return self._payload.nbytes + self._scales.nbytes + self._zeros.nbytes

    def verify(self) -> None:
        """Check the stored bytes' sha256; on mismatch raise WeightFormatError naming file and tensor."""
        if self._verified:
            return
        if checksum(self._payload, self._scales, self._zeros) != self.sha256:
            raise WeightFormatError(
                f"{self.file}: checksum mismatch in tensor {self.name!r}: the file is corrupt; "
                "re-export it (arrowdiff quantize / save_model_dir) or copy it again"
            )
        self._verified = True

    def quantized(self) -> QuantizedTensor:
        """The tensor in ArrowQuant form; ``packed`` shares memory with the file mapping."""
        _, n_scales, _ = layout(self.shape, self.bits, self.group_size)
        rows = 1 if not self.shape else int(np.prod(self.shape[:-1]))
        grid = (rows, n_scales // rows) if rows else (0, 0)
        scales = _torch_view(self._scales, torch.float16).reshape(grid)
        zeros = _torch_view(self._zeros, torch.float16 if self.method == "hqq" else torch.uint8).reshape(grid)
        packed = torch.from_numpy(self._payload)
        return QuantizedTensor(
            packed, scales, zeros, self.shape, self.bits, self.group_size, self.method, self.pad
        )

    def to_tensor(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Dequantize into a new tensor (``dtype`` defaults to the original); verifies the checksum first."""
        self.verify()
        return dequantize(self.quantized(), DTYPES[self.dtype] if dtype is None else dtype)


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


def write_component(
    path: Path, tensors: Mapping[str, torch.Tensor | StoredTensor], policy: QuantPolicy
) -> None:
    """Write ``tensors`` to the component file ``path`` atomically (tmp file, fsync, rename).

    Tensors are stored as ``policy`` says; a :class:`StoredTensor` is copied as stored (its checksum is
    verified first), so tensors can be carried over from another file without a lossy round trip, and a
    :class:`QuantizedTensor` (codes made elsewhere, e.g. a GGUF's blocks) is written as given.
    """
    path = Path(path)
    if not isinstance(policy, QuantPolicy):
        raise ConfigError(f"policy must be a QuantPolicy, got {type(policy).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with pq.ParquetWriter(tmp, SCHEMA, **WRITER_SETTINGS) as writer:
            for name, tensor in tensors.items():
                writer.write_table(_row(path, name, tensor, policy))  # one row group per tensor
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _corrupt(path: Path, what: str) -> WeightFormatError:
    return WeightFormatError(f"{path}: {what}; the file is truncated or corrupt: re-export or copy it again")


class _Blobs:
    """Finds blob cells: views into ``mm`` where the file follows section 4, pyarrow copies otherwise.

    Page headers are read with ``os.pread`` on ``fd``, not through the mapping, so locating a tensor maps
    none of the file's pages: they are faulted in only when the tensor's values are used.
    """

    def __init__(self, path: Path, mm: mmap.mmap, fd: int, pf: pq.ParquetFile) -> None:
        self.path, self.mm, self.fd, self.pf = path, mm, fd, pf
        self.md, self.schema = pf.metadata, pf.schema  # looked up once, not per cell
        md = self.md
        self.one_per_group = all(md.row_group(i).num_rows == 1 for i in range(md.num_row_groups))
        self._decoded: dict[str, pa.ChunkedArray] = {}  # fallback: whole columns, decoded once

    def get(self, row: int, name: str, column: str, n: int) -> tuple[np.ndarray, bool]:
        if self.one_per_group:
            view = self._view(row, name, column, n)
            if view is not None:
                return view, True
        if column not in self._decoded:
            self._decoded[column] = self.pf.read(columns=[column]).column(0)
        value = self._decoded[column][row].as_py()
        if len(value) != n:
            raise _corrupt(
                self.path, f"tensor {name!r} column {column!r} holds {len(value)} bytes, expected {n}"
            )
        return np.frombuffer(value, dtype=np.uint8).copy(), False

    def _view(self, rg: int, name: str, column: str, n: int) -> np.ndarray | None:
        leaf = SCHEMA.names.index(column)  # every column before the blobs is one Parquet leaf
        cc = self.md.row_group(rg).column(leaf)
        if cc.path_in_schema != column:
            return None
        start = cc.data_page_offset
        end = start + cc.total_compressed_size
        if end > len(self.mm):
            raise _corrupt(self.path, f"tensor {name!r} column {column!r} ends at byte {end}, past the end")
        if cc.compression != "UNCOMPRESSED" or cc.has_dictionary_page:
            return None
        max_def = self.schema.column(leaf).max_definition_level
        head = os.pread(self.fd, min(end - start, _HEADER_READ), start)  # header + length prefix
        span = locate_single_value(head, 0, end - start, n, max_def)
        if span is None:
            return None
        return np.frombuffer(self.mm, dtype=np.uint8, count=n, offset=start + span.offset)


def _check_row(path: Path, row: dict) -> tuple[int, int, int]:
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
        raise _corrupt(path, f"tensor {name!r} has negative shape {row['shape']}")
    shape = tuple(row["shape"])
    if bits in FLOAT_BITS:
        if method != "none" or row["pad"] != 0:
            raise _corrupt(path, f"tensor {name!r} stores raw {bits}-bit floats but method={method!r}")
        return layout(shape, bits, 1)[0], 0, 0
    if method not in METHODS or row["group_size"] < 1:
        raise WeightFormatError(
            f"{path}: tensor {name!r} has method={method!r}, group_size={row['group_size']}; "
            f"this arrowdiff reads methods {METHODS}: upgrade arrowdiff or re-export the model"
        )
    n_payload, n_groups, pad = layout(shape, bits, row["group_size"])
    if row["pad"] != pad:
        raise _corrupt(path, f"tensor {name!r} records pad={row['pad']} but its shape implies {pad}")
    return n_payload, 2 * n_groups, n_groups * (2 if method == "hqq" else 1)


def read_component(path: Path, verify: bool = False) -> dict[str, StoredTensor]:
    """Open a component file and return lazy, zero-copy tensors by name (in file order).

    With ``verify=True`` every checksum is checked now; otherwise on each tensor's first ``to_tensor``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightFormatError(f"{path}: component file not found; check the path or re-export the model")
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if size < 12:
            raise _corrupt(path, f"only {size} bytes, too short for Parquet")
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)  # private mapping: never writes the file
        # magic bytes, footer, small columns and page headers are read, not mapped: opening a file maps
        # none of its pages, so resident memory grows only as tensors are used
        if os.pread(fd, 4, 0) != b"PAR1" or os.pread(fd, 4, size - 4) != b"PAR1":
            raise _corrupt(path, "no Parquet magic bytes at start and end")
        try:
            pf = pq.ParquetFile(pa.PythonFile(f, mode="r"))
            kv = pf.metadata.metadata or {}
            version = kv.get(VERSION_KEY.encode())
            if version is None:
                raise WeightFormatError(
                    f"{path}: no '{VERSION_KEY}' key: not an ArrowQuant file; re-export it"
                )
            if version.decode() not in SUPPORTED_FORMAT_VERSIONS:
                raise WeightFormatError(
                    f"{path}: format version {version.decode()!r} is not one this arrowdiff reads "
                    f"{SUPPORTED_FORMAT_VERSIONS}; upgrade arrowdiff or re-export the model"
                )
            if pf.schema_arrow.names != SCHEMA.names:
                raise WeightFormatError(f"{path}: columns {pf.schema_arrow.names} differ from {SCHEMA.names}")
            rows = pf.read(columns=list(SMALL_COLUMNS), use_threads=False).to_pylist()  # tiny: no pool
        except (pa.ArrowException, OSError) as e:
            raise _corrupt(path, f"pyarrow cannot read it ({e})") from e
        blobs = _Blobs(path, mm, fd, pf)
        cells_of = []
        for i, row in enumerate(rows):
            sizes = _check_row(path, row)
            try:
                cells_of.append(
                    [blobs.get(i, row["name"], c, n) for c, n in zip(BLOB_COLUMNS, sizes, strict=True)]
                )
            except (pa.ArrowException, OSError) as e:
                raise _corrupt(path, f"pyarrow cannot read tensor {row['name']!r} ({e})") from e
    out: dict[str, StoredTensor] = {}
    for row, cells in zip(rows, cells_of, strict=True):
        name = row["name"]
        if name in out:
            raise _corrupt(path, f"tensor {name!r} appears twice")
        st = StoredTensor(
            name, path, tuple(row["shape"]), row["dtype"], row["bits"], row["group_size"], row["method"],
            row["pad"], row["sha256"], all(z for _, z in cells), cells[0][0], cells[1][0], cells[2][0],
        )  # fmt: skip
        if verify:
            st.verify()
        out[name] = st
    return out
