"""One segment file: an immutable Parquet file of upserts and tombstones (FORMAT.md, sections 2-4).

A segment is named ``seg-<first>-<last>-<sha256>.parquet``: the range of sequence numbers it covers and
the SHA-256 of its bytes. The name is published by an atomic rename, so the checksum and the content
arrive together; reading a segment re-hashes its bytes, which detects flipped and truncated bytes alike.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from arrowdiff.errors import StorageError
from arrowdiff.memory.durable import write_atomic
from arrowdiff.memory.records import Memory

FORMAT_NAME = "arrowdiff-memory"
FORMAT_VERSION = 1
SEGMENT_RE = re.compile(r"^seg-(\d{12})-(\d{12})-([0-9a-f]{64})\.parquet$")
OP_PUT, OP_DELETE = "put", "delete"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Entry = tuple[str, Memory | None]  # (id, the full record) for an upsert, (id, None) for a tombstone


@dataclass(frozen=True, order=True)
class SegmentName:
    """``seg-<first>-<last>-<digest>.parquet``: sequence numbers ``first..last`` (equal for a write, a
    range for a compaction's output) and the hex SHA-256 of the file's bytes."""

    first: int
    last: int
    digest: str

    @property
    def file_name(self) -> str:
        return f"seg-{self.first:012d}-{self.last:012d}-{self.digest}.parquet"

    @classmethod
    def parse(cls, file_name: str) -> SegmentName | None:
        m = SEGMENT_RE.match(file_name)
        return None if m is None else cls(int(m[1]), int(m[2]), m[3])

    def covers(self, other: SegmentName) -> bool:
        """True if this segment's range strictly contains ``other``'s: ``other`` was merged into it."""
        return self.first <= other.first and other.last <= self.last and self != other


@dataclass(frozen=True)
class Segment:
    """A segment read back and verified: its entries in write order (later entries win)."""

    name: SegmentName
    entries: list[Entry]


class DamagedSegmentError(StorageError):
    """A segment file whose bytes do not match its checksum or do not parse."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"damaged memory segment {path}: {reason}")


def schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("op", pa.string(), nullable=False),  # "put" (insert or update) | "delete"
            pa.field("id", pa.string(), nullable=False),
            pa.field("text", pa.string()),
            pa.field("modality", pa.string()),
            pa.field("embedding", pa.list_(pa.float32(), dim)),  # unit L2 norm
            pa.field("created_at", pa.timestamp("us", tz="UTC")),
            pa.field("kind", pa.string()),
            pa.field("metadata", pa.string()),  # a JSON object
            pa.field("payload", pa.string()),
        ]
    )


def encode_segment(entries: list[Entry], dim: int, first: int, last: int) -> bytes:
    """The Parquet bytes of a segment holding ``entries`` (puts carry every field, tombstones only id)."""
    puts = [m for _, m in entries if m is not None]
    emb = np.zeros((len(entries), dim), dtype=np.float32)
    rows = [i for i, (_, m) in enumerate(entries) if m is not None]
    if puts:
        emb[rows] = np.stack([m.embedding for m in puts])
    is_put = np.array([m is not None for _, m in entries], dtype=bool)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim, mask=pa.array(~is_put))

    def col(get):
        return [None if m is None else get(m) for _, m in entries]

    table = pa.table(
        {
            "op": [OP_PUT if m is not None else OP_DELETE for _, m in entries],
            "id": [i for i, _ in entries],
            "text": col(lambda m: m.text),
            "modality": col(lambda m: m.modality),
            "embedding": embedding,
            "created_at": col(lambda m: m.created_at),
            "kind": col(lambda m: m.kind),
            "metadata": col(lambda m: m.metadata_json),
            "payload": col(lambda m: m.payload),
        },
        schema=schema(dim),
    ).replace_schema_metadata(
        {
            "arrowdiff.format": FORMAT_NAME,
            "arrowdiff.version": str(FORMAT_VERSION),
            "arrowdiff.dim": str(dim),
            "arrowdiff.first": str(first),
            "arrowdiff.last": str(last),
        }
    )
    sink = pa.BufferOutputStream()
    # page checksums: any Parquet tool reading a copy of the file can also tell a damaged page
    pq.write_table(table, sink, write_page_checksum=True, compression={"embedding": "none"})
    return sink.getvalue().to_pybytes()


def write_segment(folder: Path, entries: list[Entry], dim: int, first: int, last: int) -> SegmentName:
    """Encode, checksum and durably publish a segment in ``folder``; return its name."""
    data = encode_segment(entries, dim, first, last)
    name = SegmentName(first, last, hashlib.sha256(data).hexdigest())
    write_atomic(folder, name.file_name, data)
    return name


def read_segment(path: Path, dim: int) -> Segment:
    """Read, verify and decode one segment.

    Raises ``DamagedSegmentError`` if its bytes do not match the checksum in its name or do not decode,
    ``StorageError`` if it is intact but was written with another embedding size or a newer format.
    """
    name = SegmentName.parse(path.name)
    if name is None:
        raise StorageError(f"{path} is not a memory segment (expected seg-<first>-<last>-<sha256>.parquet)")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != name.digest:
        raise DamagedSegmentError(
            path, f"checksum mismatch ({len(data)} bytes hash to {digest[:12]}..., the name says "
            f"{name.digest[:12]}...): flipped or truncated bytes"
        )  # fmt: skip
    try:
        # one thread, no dataset scanner: Arrow's worker threads can abort the interpreter at exit
        # (apache/arrow#34314), and a segment is small enough to decode on the calling thread
        parquet = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
        table = parquet.read(use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DamagedSegmentError(path, f"not a readable Parquet file ({e})") from e
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get("arrowdiff.format") != FORMAT_NAME:
        raise DamagedSegmentError(
            path, f"not an {FORMAT_NAME} segment (format {meta.get('arrowdiff.format')!r})"
        )
    if int(meta.get("arrowdiff.version", "0")) > FORMAT_VERSION:
        raise StorageError(
            f"{path} was written by a newer arrowdiff (format version {meta['arrowdiff.version']} > "
            f"{FORMAT_VERSION}); upgrade arrowdiff to read this store"
        )
    if int(meta.get("arrowdiff.dim", "-1")) != dim:
        raise StorageError(
            f"{path} holds {meta.get('arrowdiff.dim')}-d embeddings but the store was opened with dim={dim}; "
            f"open it with dim={meta.get('arrowdiff.dim')} or use another store folder"
        )
    if (int(meta.get("arrowdiff.first", "-1")), int(meta.get("arrowdiff.last", "-1"))) != (
        name.first,
        name.last,
    ):
        raise DamagedSegmentError(path, "its name does not match the sequence range recorded inside it")
    try:
        return Segment(name, decode_entries(table, dim))
    except (KeyError, TypeError, ValueError, pa.ArrowException) as e:
        raise DamagedSegmentError(path, f"its columns do not follow the segment schema ({e})") from e


def decode_entries(table: pa.Table, dim: int) -> list[Entry]:
    """The entries of a decoded segment table, embeddings as read-only views of one (N, D) array."""
    n = table.num_rows
    ops = table.column("op").to_pylist()
    ids = table.column("id").to_pylist()
    texts = table.column("text").to_pylist()
    modalities = table.column("modality").to_pylist()
    kinds = table.column("kind").to_pylist()
    metas = table.column("metadata").to_pylist()
    payloads = table.column("payload").to_pylist()
    created = table.column("created_at").cast(pa.int64()).to_pylist()
    emb_col = table.column("embedding").combine_chunks()
    values = emb_col.values.to_numpy(zero_copy_only=False)[emb_col.offset * dim : (emb_col.offset + n) * dim]
    emb = np.array(values, dtype=np.float32).reshape(n, dim)
    emb.flags.writeable = False
    entries: list[Entry] = []
    for i in range(n):
        if ops[i] == OP_DELETE:
            entries.append((ids[i], None))
            continue
        memory = Memory(
            id=ids[i],
            text=texts[i],
            embedding=emb[i],
            created_at=EPOCH + timedelta(microseconds=created[i]),
            kind=kinds[i],
            modality=modalities[i],
            metadata_json=metas[i],
            payload=payloads[i],
        )
        entries.append((ids[i], memory))
    return entries
