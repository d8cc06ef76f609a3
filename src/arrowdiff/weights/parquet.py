"""ArrowQuant component files: one Parquet file of tensors, one row and one row group per tensor.

The layout is specified in ``FORMAT.md`` (next to this file); section numbers below refer to it. Reading
memory-maps the file and views each tensor's bytes in place (section 6): nothing is decoded or copied until
:meth:`StoredTensor.to_tensor` dequantizes it. The bytes are located through the tensor index in the
footer's key-value metadata (section 9) when the file has one that checks out, else through pyarrow.
Nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.weights.pages import (
    field_offset,
    find_key_value,
    key_value_entry,
    locate_single_value,
)
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
INDEX_KEY = "arrowdiff.index"  # section 9: where every tensor's bytes lie, so readers can skip pyarrow
INDEX_SHA256_KEY = "arrowdiff.index.sha256"  # hex sha256 of the INDEX_KEY value's bytes
INDEX_VERSION = 1
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
_VERSION_ENTRY, _INDEX_ENTRY = key_value_entry(VERSION_KEY), key_value_entry(INDEX_KEY)
_INDEX_SHA256_ENTRY = key_value_entry(INDEX_SHA256_KEY)
_KEY_VALUE_FIELD = 5  # FileMetaData.key_value_metadata in parquet.thrift
_KEY_VALUE_HEADER = 0x19  # its compact-protocol field header after field 4: id delta 1, type list (9)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SUPPORTED_VERSION_BYTES = tuple(v.encode() for v in SUPPORTED_FORMAT_VERSIONS)
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

    The file is written twice (section 9): once plainly, to find where every tensor's bytes landed, then
    again from the first file's row groups with that index added to the footer. The data pages precede
    the footer, so the second write must reproduce them byte for byte; this is checked, not assumed.
    """
    path = Path(path)
    if not isinstance(policy, QuantPolicy):
        raise ConfigError(f"policy must be a QuantPolicy, got {type(policy).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    plain = tmp.with_name(f"{tmp.name}.plain")
    try:
        with pq.ParquetWriter(plain, SCHEMA, **WRITER_SETTINGS) as writer:
            for name, tensor in tensors.items():
                writer.write_table(_row(path, name, tensor, policy))  # one row group per tensor
        _write_indexed(path, plain, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plain.unlink(missing_ok=True)
    fsync_dir(path.parent)


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


def _footer(fd: int, size: int) -> bytes | None:
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
        footer = _footer(fd, size)
        if footer is None:
            raise _corrupt(path, "bad footer length")
        prefix = field_offset(footer, _KEY_VALUE_FIELD)
        pf = pq.ParquetFile(pa.PythonFile(f, mode="r"))
        rows = pf.read(columns=list(SMALL_COLUMNS), use_threads=False).to_pylist()
        blobs = _Blobs(path, None, fd, pf)
        tensors = []
        for i, row in enumerate(rows):
            spans = {}
            for column, n in zip(BLOB_COLUMNS, _check_row(path, row), strict=True):
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


def _corrupt(path: Path, what: str) -> WeightFormatError:
    return WeightFormatError(f"{path}: {what}; the file is truncated or corrupt: re-export or copy it again")


class _Blobs:
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
            raise _corrupt(
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
            raise _corrupt(self.path, f"tensor {name!r} column {column!r} ends at byte {end}, past the end")
        if cc.compression != "UNCOMPRESSED" or cc.has_dictionary_page:
            return None
        max_def = self.schema.column(leaf).max_definition_level
        head = os.pread(self.fd, min(end - start, _HEADER_READ), start)  # header + length prefix
        span = locate_single_value(head, 0, end - start, n, max_def)
        return None if span is None else start + span.offset


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
        for column, n in zip(BLOB_COLUMNS, _check_row(path, e), strict=True):
            span = e[column]
            if type(span) is not list or len(span) != 2 or span[1] != n or type(span[0]) is not int:
                return False
            if span[0] < 4 or span[0] + n > data_end:
                return False
    except (KeyError, TypeError, ValueError, OverflowError, WeightFormatError):
        return False
    return True


def _parse_index(path: Path, footer: bytes, size: int) -> list[dict] | None:
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
        footer = _footer(fd, size)
        return None if footer is None else _parse_index(path, footer, size)


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
            raise _corrupt(path, f"only {size} bytes, too short for Parquet")
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)  # private mapping: never writes the file
        # magic bytes, footer, small columns and page headers are read, not mapped: opening a file maps
        # none of its pages, so resident memory grows only as tensors are used
        if os.pread(fd, 4, 0) != b"PAR1" or os.pread(fd, 4, size - 4) != b"PAR1":
            raise _corrupt(path, "no Parquet magic bytes at start and end")
        footer = _footer(fd, size)
        entries = None if footer is None else _parse_index(path, footer, size)
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
        e["sha256"], True, *cells,
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
        if pf.schema_arrow.names != SCHEMA.names:
            raise WeightFormatError(f"{path}: columns {pf.schema_arrow.names} differ from {SCHEMA.names}")
        rows = pf.read(columns=list(SMALL_COLUMNS), use_threads=False).to_pylist()  # tiny: no pool
    except (pa.ArrowException, OSError) as e:
        raise _corrupt(path, f"pyarrow cannot read it ({e})") from e
    blobs = _Blobs(path, mm, fd, pf)
    out: dict[str, StoredTensor] = {}
    for i, row in enumerate(rows):
        sizes = _check_row(path, row)
        name = row["name"]
        try:
            cells = [blobs.get(i, name, c, n) for c, n in zip(BLOB_COLUMNS, sizes, strict=True)]
        except (pa.ArrowException, OSError) as e:
            raise _corrupt(path, f"pyarrow cannot read tensor {name!r} ({e})") from e
        if name in out:
            raise _corrupt(path, f"tensor {name!r} appears twice")
        out[name] = StoredTensor(
            name, path, tuple(row["shape"]), row["dtype"], row["bits"], row["group_size"], row["method"],
            row["pad"], row["sha256"], all(z for _, z in cells), cells[0][0], cells[1][0], cells[2][0],
        )  # fmt: skip
    return out
