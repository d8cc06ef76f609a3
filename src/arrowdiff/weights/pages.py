"""Find a one-value BYTE_ARRAY column chunk's bytes inside a Parquet file, so they can be viewed, not copied.

Parquet page headers are Thrift structs in the compact protocol (parquet-format ``parquet.thrift``,
``PageHeader``). We decode them with the small generic reader below and check every assumption the zero-copy
view relies on (FORMAT.md section 6); any surprise returns ``None`` and the caller falls back to pyarrow.
The footer helpers at the end find a key-value entry in a serialized ``FileMetaData`` without decoding it,
and where its key-value list begins (FORMAT.md section 9, the tensor index).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# compact-protocol type ids
_BOOL_TRUE, _BOOL_FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)
# parquet.thrift enums
DATA_PAGE, DATA_PAGE_V2 = 0, 3
PLAIN = 0


class ThriftError(ValueError):
    """The bytes are not a well-formed compact-protocol struct."""


def _varint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    out, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ThriftError("varint runs past the end of the buffer")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, pos
        shift += 7


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _value(buf: memoryview | bytes, pos: int, t: int, depth: int) -> tuple[object, int]:
    if t in (_BOOL_TRUE, _BOOL_FALSE):  # inside a list/map a bool is one byte
        if pos >= len(buf):
            raise ThriftError("bool runs past the end of the buffer")
        return buf[pos] == 1, pos + 1
    if t == _BYTE:
        if pos >= len(buf):
            raise ThriftError("byte runs past the end of the buffer")
        return buf[pos], pos + 1
    if t in (_I16, _I32, _I64):
        n, pos = _varint(buf, pos)
        return _zigzag(n), pos
    if t == _DOUBLE:
        if pos + 8 > len(buf):
            raise ThriftError("double runs past the end of the buffer")
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if t == _BINARY:
        n, pos = _varint(buf, pos)
        if pos + n > len(buf):
            raise ThriftError("binary runs past the end of the buffer")
        return bytes(buf[pos : pos + n]), pos + n
    if t in (_LIST, _SET):
        if pos >= len(buf):
            raise ThriftError("list header runs past the end of the buffer")
        head, pos = buf[pos], pos + 1
        size, et = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        items = []
        for _ in range(size):
            item, pos = _value(buf, pos, et, depth + 1)
            items.append(item)
        return items, pos
    if t == _MAP:
        size, pos = _varint(buf, pos)
        if size == 0:
            return {}, pos
        kt, vt = buf[pos] >> 4, buf[pos] & 0x0F
        pos += 1
        out = {}
        for _ in range(size):
            k, pos = _value(buf, pos, kt, depth + 1)
            v, pos = _value(buf, pos, vt, depth + 1)
            out[k] = v
        return out, pos
    if t == _STRUCT:
        return read_struct(buf, pos, depth + 1)
    raise ThriftError(f"unknown compact type id {t}")


def read_struct(buf: memoryview | bytes, pos: int = 0, depth: int = 0) -> tuple[dict[int, object], int]:
    """Decode one compact-protocol struct at ``pos``: ({field id: value}, position after it)."""
    if depth > 16:
        raise ThriftError("structs nested too deeply")
    fields: dict[int, object] = {}
    last = 0
    while True:
        if pos >= len(buf):
            raise ThriftError("struct runs past the end of the buffer")
        head, pos = buf[pos], pos + 1
        if head == 0:  # STOP
            return fields, pos
        delta, t = head >> 4, head & 0x0F
        if delta:
            fid = last + delta
        else:
            n, pos = _varint(buf, pos)
            fid = _zigzag(n)
        if t in (_BOOL_TRUE, _BOOL_FALSE):  # a struct field's bool lives in its type nibble
            fields[fid] = t == _BOOL_TRUE
        else:
            fields[fid], pos = _value(buf, pos, t, depth)
        last = fid


@dataclass(frozen=True)
class ValueSpan:
    """Where a single BYTE_ARRAY value's bytes lie in the file."""

    offset: int  # first byte of the value (after its 4-byte length)
    length: int


def locate_single_value(
    buf: memoryview | bytes, page_offset: int, chunk_end: int, expected_len: int, max_def_level: int = 0
) -> ValueSpan | None:
    """Find the one PLAIN, uncompressed BYTE_ARRAY value of the data page at ``page_offset``.

    Returns ``None`` when the page is anything else (compressed, dictionary-encoded, several values,
    nullable, a different length): the caller then reads it through pyarrow instead.
    """
    try:
        header, pos = read_struct(buf[page_offset : min(chunk_end, page_offset + 4096)])
    except ThriftError:
        return None
    start = page_offset + pos  # first byte after the header
    size = header.get(3)  # compressed_page_size
    if not isinstance(size, int) or start + size > chunk_end or header.get(2) != size:
        return None
    if header.get(1) == DATA_PAGE_V2:
        v2 = header.get(8)
        if not isinstance(v2, dict) or v2.get(1) != 1 or v2.get(2, 0) != 0 or v2.get(4) != PLAIN:
            return None
        if v2.get(7, True):  # is_compressed defaults to true
            return None
        start += int(v2.get(5, 0)) + int(v2.get(6, 0))  # level bytes, stored ahead of the values
    elif header.get(1) == DATA_PAGE:
        v1 = header.get(5)
        if not isinstance(v1, dict) or v1.get(1) != 1 or v1.get(2) != PLAIN or max_def_level != 0:
            return None
    else:
        return None
    if start + 4 > min(chunk_end, len(buf)):  # ``buf`` may hold just the page's first bytes
        return None
    (n,) = struct.unpack_from("<I", buf, start)
    if n != expected_len or start + 4 + n > chunk_end:
        return None
    return ValueSpan(start + 4, n)


def field_offset(buf: memoryview | bytes, field_id: int) -> int:
    """Position of the header of the first field with id >= ``field_id`` in the top-level struct of
    ``buf`` (or of its STOP byte): every byte before it encodes only the fields with smaller ids."""
    pos, last = 0, 0
    while True:
        if pos >= len(buf):
            raise ThriftError("struct runs past the end of the buffer")
        head = buf[pos]
        if head == 0:
            return pos
        delta, t = head >> 4, head & 0x0F
        if delta:
            fid, after = last + delta, pos + 1
        else:
            n, after = _varint(buf, pos + 1)
            fid = _zigzag(n)
        if fid >= field_id:
            return pos
        if t not in (_BOOL_TRUE, _BOOL_FALSE):
            _, after = _value(buf, after, t, 0)
        pos, last = after, fid


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key_value_entry(key: str) -> bytes:
    """The bytes that open a Parquet ``KeyValue`` struct for ``key`` in the compact protocol, up to the
    value's length: field 1 (binary) header, key length, key, field 2 (binary) header."""
    k = key.encode()
    return bytes([0x10 | _BINARY]) + _varint_bytes(len(k)) + k + bytes([0x10 | _BINARY])


def find_key_value(footer: bytes, entry: bytes) -> tuple[int, int, int] | None:
    """Locate the LAST ``KeyValue`` opening with ``entry`` (see :func:`key_value_entry`) in a serialized
    ``FileMetaData``: (entry start, value start, value end), or ``None`` when there is none or it is not
    well formed (the value must be followed by the struct's STOP byte).

    The key-value list (field 5) follows the row groups and precedes only ``created_by`` and the column
    orders, so the last match is the list's own entry even if a tensor name in the statistics of the row
    groups happened to contain the same bytes; callers also check where the match lies.
    """
    start = footer.rfind(entry)
    if start < 0:
        return None
    try:
        n, pos = _varint(footer, start + len(entry))
    except ThriftError:
        return None
    end = pos + n
    if end >= len(footer) or footer[end] != 0:  # STOP of the KeyValue struct
        return None
    return start, pos, end
