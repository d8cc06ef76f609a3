"""The tensor index in a component file's footer (FORMAT.md section 9): it matches the page-decoded
offsets, files without it (or with one that does not check out) load through pyarrow, and a damaged
index never makes a reader return wrong data."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from arrowdiff.errors import WeightFormatError
from arrowdiff.weights import QuantPolicy, load_model_dir, read_component, save_model_dir, write_component
from arrowdiff.weights import parquet as aq
from arrowdiff.weights.pages import _varint_bytes, find_key_value, key_value_entry
from arrowdiff.weights.parquet import INDEX_KEY, INDEX_SHA256_KEY, WRITER_SETTINGS, build_index, read_index
from arrowdiff.weights.requantize import reindex_model_dir


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "blocks.0.attn.weight": torch.randn(24, 40, generator=g),
        "blocks.0.mlp.weight": torch.randn(2, 8, 33, generator=g).to(torch.bfloat16),
        "blocks.0.norm.weight": torch.randn(40, generator=g),
        "tok_embed.weight": torch.randn(10, 16, generator=g),
        "scale": torch.tensor(0.5),
    }


POLICY = QuantPolicy(bits=4, group_size=16, keep=(("*embed*", 8),))


def _write(tmp_path: Path, name: str = "c.parquet", policy: QuantPolicy = POLICY) -> Path:
    path = tmp_path / name
    write_component(path, _tensors(), policy)
    return path


def _values(stored: dict) -> dict:
    return {k: (st.shape, st.dtype, st.bits, st.to_tensor()) for k, st in stored.items()}


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(
        a[k][:3] == b[k][:3] and a[k][3].dtype == b[k][3].dtype and torch.equal(a[k][3], b[k][3]) for k in a
    )


def _split(path: Path) -> tuple[bytes, bytes]:
    """(everything before the footer, the footer)."""
    data = path.read_bytes()
    n = int.from_bytes(data[-8:-4], "little")
    return data[: len(data) - 8 - n], data[len(data) - 8 - n : -8]


def _set_kv(path: Path, key: str, value: bytes) -> None:
    """Replace the value of key-value entry ``key`` in ``path``'s footer (lengths fixed up)."""
    body, footer = _split(path)
    entry = key_value_entry(key)
    start, _, end = find_key_value(footer, entry)
    footer = footer[: start + len(entry)] + _varint_bytes(len(value)) + value + footer[end:]
    path.write_bytes(body + footer + len(footer).to_bytes(4, "little") + b"PAR1")


def _raw_index(path: Path) -> bytes:
    _, footer = _split(path)
    _, lo, hi = find_key_value(footer, key_value_entry(INDEX_KEY))
    return footer[lo:hi]


def _edit_index(path: Path, edit, redigest: bool = True) -> None:
    """Apply ``edit`` to the decoded index (or use the bytes it returns) and store it back; with
    ``redigest`` the index checksum is updated too, as a (buggy) writer would."""
    index = json.loads(_raw_index(path))
    out = edit(index)
    text = out if isinstance(out, bytes) else json.dumps(index, separators=(",", ":")).encode()
    _set_kv(path, INDEX_KEY, text)
    if redigest:
        _set_kv(path, INDEX_SHA256_KEY, hashlib.sha256(text).hexdigest().encode())


@pytest.mark.parametrize("method", ["rtn", "hqq"])
@pytest.mark.parametrize("bits", [2, 4, 8, 16, 32])
def test_index_matches_page_decoded_offsets(tmp_path, bits, method):
    path = _write(tmp_path, policy=QuantPolicy(bits=bits, group_size=16, method=method, keep=()))
    index = read_index(path)
    assert index is not None and [e["name"] for e in index] == list(_tensors())
    assert index == build_index(path)["tensors"]  # page headers decoded from pyarrow's footer
    assert {e["bits"] for e in index} == ({bits, 32} if bits != 32 else {32})
    table, data = pq.read_table(path), path.read_bytes()
    stored = read_component(path)
    base = np.frombuffer(next(iter(stored.values())).payload.base.base.obj, np.uint8)
    for i, e in enumerate(index):
        row = {c: table.column(c)[i].as_py() for c in table.column_names}
        assert {k: e[k] for k in aq.SMALL_COLUMNS} == {k: row[k] for k in aq.SMALL_COLUMNS}
        for c in aq.BLOB_COLUMNS:
            offset, n = e[c]
            assert data[offset : offset + n] == row[c]  # pyarrow decodes the same bytes
            assert int.from_bytes(data[offset - 4 : offset], "little") == n  # PLAIN length prefix
        st = stored[e["name"]]
        assert st.zero_copy
        start = st.payload.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        assert start == e["payload"][0]  # read_component's views are the indexed bytes


def test_index_is_in_the_parquet_metadata_only(tmp_path):
    path = _write(tmp_path)
    kv = pq.ParquetFile(path).metadata.metadata
    assert set(kv) == {
        b"ARROW:schema",
        b"arrowdiff.format_version",
        INDEX_KEY.encode(),
        INDEX_SHA256_KEY.encode(),
    }
    assert kv[INDEX_SHA256_KEY.encode()].decode() == hashlib.sha256(kv[INDEX_KEY.encode()]).hexdigest()
    assert INDEX_KEY.encode() not in (pq.read_table(path).schema.metadata or {})  # not in ARROW:schema
    index = json.loads(kv[INDEX_KEY.encode()])
    assert index["version"] == 1 and index["data_end"] == path.stat().st_size - 8 - len(_split(path)[1])


def test_read_component_uses_the_index_not_pyarrow(tmp_path, monkeypatch):
    path = _write(tmp_path)
    expect = _values(read_component(path))

    def no_pyarrow(*args, **kwargs):
        raise AssertionError("pyarrow was used")

    monkeypatch.setattr(pq, "ParquetFile", no_pyarrow)
    stored = read_component(path, verify=True)
    assert all(st.zero_copy for st in stored.values()) and _same(_values(stored), expect)


def test_older_files_without_index_load_through_pyarrow(tmp_path):
    path = _write(tmp_path)
    expect = _values(read_component(path))
    table = pq.read_table(path)
    # a 1.0 file from before the index: the section 4 settings, zero-copy through the footer
    pq.write_table(table, tmp_path / "old.parquet", row_group_size=1, **WRITER_SETTINGS)
    # another layout altogether: pyarrow's defaults (compressed, dictionary, one row group)
    pq.write_table(table, tmp_path / "other.parquet")
    for name, zero_copy in (("old.parquet", True), ("other.parquet", False)):
        g = tmp_path / name
        assert INDEX_KEY.encode() not in pq.ParquetFile(g).metadata.metadata
        assert read_index(g) is None
        stored = read_component(g, verify=True)
        assert all(st.zero_copy == zero_copy for st in stored.values())
        assert _same(_values(stored), expect)


@pytest.mark.parametrize("layout", ["compressed", "reordered"])
def test_stale_index_carried_over_by_a_rewrite_is_not_trusted(tmp_path, layout):
    """A tool that rewrites the file and copies the key-value metadata carries an index whose offsets no
    longer hold: the footer-prefix check notices and the file loads through pyarrow."""
    path = _write(tmp_path)
    expect = _values(read_component(path))
    kv = pq.ParquetFile(path).metadata.metadata
    table = pq.read_table(path).replace_schema_metadata({k: v for k, v in kv.items() if k != b"ARROW:schema"})
    g = tmp_path / "rewritten.parquet"
    if layout == "compressed":
        pq.write_table(table, g, compression="snappy", row_group_size=1)
    else:  # same settings, row groups in another order: same sizes, different offsets
        pq.write_table(table.take(list(range(table.num_rows))[::-1]), g, row_group_size=1, **WRITER_SETTINGS)
    assert pq.ParquetFile(g).metadata.metadata[INDEX_KEY.encode()] == kv[INDEX_KEY.encode()]
    assert read_index(g) is None
    stored = read_component(g, verify=True)
    assert _same({k: _values(stored)[k] for k in expect}, expect)


def test_every_damaged_index_byte_falls_back(tmp_path):
    """Flip each byte of the index, its checksum and their keys: the file still loads, with the right
    tensors (the index's own checksum catches every flip, and pyarrow reads the columns)."""
    path = _write(tmp_path)
    expect = _values(read_component(path))
    body, footer = _split(path)
    spans = [find_key_value(footer, key_value_entry(k)) for k in (INDEX_KEY, INDEX_SHA256_KEY)]
    positions = [p for start, _, end in spans for p in range(start, end)]
    assert len(positions) > 1000
    g = tmp_path / "flipped.parquet"
    for p in positions[::7]:
        damaged = bytearray(footer)
        damaged[p] ^= 0x01
        g.write_bytes(body + bytes(damaged) + path.read_bytes()[-8:])
        assert read_index(g) is None, p
        try:
            stored = read_component(g, verify=True)
        except WeightFormatError:
            continue  # e.g. a flipped length prefix garbles the footer for pyarrow too
        assert _same(_values(stored), expect), p


def _shift(column: str, by: int):
    def edit(index):
        index["tensors"][0][column][0] += by

    return edit


def _set(member: str, value, tensor: int = 0):
    def edit(index):
        index["tensors"][tensor][member] = value

    return edit


def _top(member: str, value):
    def edit(index):
        index[member] = value

    return edit


def _duplicate(index):
    index["tensors"][1]["name"] = index["tensors"][0]["name"]


@pytest.mark.parametrize(
    "edit",
    [
        lambda index: b"{not json",
        lambda index: b"\xff\xfe",
        lambda index: b"[]",
        _top("version", 2),
        _top("version", True),
        _top("data_end", 12),
        _top("footer_prefix", [10, "0" * 64]),
        _top("tensors", {}),
        _set("payload", [10**9, 240]),  # offset past the end of the file
        _set("payload", [4, 241]),  # wrong length
        _set("payload", [2, 240]),  # inside the magic bytes
        _set("scales", [-5, 72]),
        _set("scales", [100, 72.0]),
        _set("bits", 3),
        _set("bits", True),
        _set("shape", "24x40"),
        _set("shape", [24, 41]),
        _set("shape", [10**400, 1]),
        _set("pad", 0),
        _set("method", "gptq"),
        _set("dtype", "int8"),
        _set("sha256", "ABC"),
        _set("name", ""),
        _duplicate,
    ],
)
def test_index_that_does_not_check_out_falls_back(tmp_path, edit):
    """An index with a valid checksum but wrong content (a buggy writer) is not used."""
    path = _write(tmp_path)
    expect = _values(read_component(path))
    _edit_index(path, edit)
    assert read_index(path) is None
    assert _same(_values(read_component(path, verify=True)), expect)


def _swap_payloads(index):
    a, b = index["tensors"][:2]
    a["payload"], b["payload"] = b["payload"], a["payload"]


@pytest.mark.parametrize(
    "edit",
    [
        _shift("payload", -1),  # in range, right length, wrong bytes
        _set("sha256", "0" * 64),
        _swap_payloads,  # two tensors of the same size
    ],
)
def test_index_pointing_at_wrong_bytes_fails_the_checksum(tmp_path, edit):
    """An index that checks out but points at the wrong bytes is caught by the tensor checksum: an error
    naming file and tensor, never wrong values."""
    path = tmp_path / "c.parquet"
    g = torch.Generator().manual_seed(1)
    ts = {"a": torch.randn(8, 16, generator=g), "b": torch.randn(8, 16, generator=g), "c": torch.randn(3, 16)}
    write_component(path, ts, POLICY)
    _edit_index(path, edit)
    assert read_index(path) is not None
    stored = read_component(path)  # lazy: the index is structurally fine
    with pytest.raises(WeightFormatError, match=r"checksum mismatch in tensor 'a'") as e:
        stored["a"].to_tensor()
    assert str(path) in str(e.value)
    stored["c"].to_tensor()  # the others are fine
    with pytest.raises(WeightFormatError, match="checksum mismatch"):
        read_component(path, verify=True)


def test_tensor_name_that_looks_like_the_index_entry(tmp_path):
    """Tensor names appear in the footer (statistics); one holding the entry's bytes fools nothing."""
    name = key_value_entry(INDEX_KEY).decode() + '\x05{"a"}\x00'
    path = tmp_path / "c.parquet"
    write_component(path, {name: torch.randn(4, 16), "w": torch.randn(4, 16)}, POLICY)
    assert key_value_entry(INDEX_KEY) in _split(path)[1][:100_000]
    assert [e["name"] for e in read_index(path)] == [name, "w"]
    pq.write_table(pq.read_table(path), tmp_path / "old.parquet", row_group_size=1, **WRITER_SETTINGS)
    assert read_index(tmp_path / "old.parquet") is None
    assert list(read_component(tmp_path / "old.parquet", verify=True)) == [name, "w"]


def test_truncated_indexed_file_names_the_file(tmp_path):
    path = _write(tmp_path)
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) - 9, len(data) - len(_split(path)[1]) // 2):
        path.write_bytes(data[:cut])
        with pytest.raises(WeightFormatError, match="truncated or corrupt") as e:
            read_component(path)
        assert str(path) in str(e.value)


def test_reindex_model_dir_keeps_every_byte_of_the_tensors(tmp_path):
    """A model written before the index gets one; metadata.json, the tokenizer and every tensor's bytes
    stay as they were."""
    save_model_dir(
        tmp_path / "m", {"backbone": _tensors(), "heads/text": {"w": torch.randn(8, 16)}}, {}, POLICY
    )
    m = tmp_path / "m"
    (m / "tokenizer.json").write_text('{"t": 1}')
    for rel in ("backbone.parquet", "heads/text.parquet"):  # strip the index, as older writers wrote
        pq.write_table(pq.read_table(m / rel), m / rel, row_group_size=1, **WRITER_SETTINGS)
        assert read_index(m / rel) is None
    before = {p: p.read_bytes() for p in (m / "metadata.json", m / "tokenizer.json")}
    old = load_model_dir(m, verify=True).components
    old = {c: {k: (st.sha256, bytes(st.payload), st.nbytes) for k, st in t.items()} for c, t in old.items()}
    done = reindex_model_dir(m)
    assert sorted(done) == [m / "backbone.parquet", m / "heads/text.parquet"]
    assert all(read_index(p) is not None for p in done)
    assert {p: p.read_bytes() for p in before} == before
    new = load_model_dir(m, verify=True).components
    assert {
        c: {k: (st.sha256, bytes(st.payload), st.nbytes) for k, st in t.items()} for c, t in new.items()
    } == old
    assert sorted(p.name for p in m.rglob("*")) == sorted(
        ["backbone.parquet", "heads", "text.parquet", "metadata.json", "tokenizer.json"]
    )
