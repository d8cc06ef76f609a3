"""ArrowQuant files: round trips, pyarrow compatibility, zero-copy views, strict errors, golden bytes."""

import hashlib
import json
import mmap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from arrowdiff.errors import ConfigError, WeightFormatError
from arrowdiff.weights import (
    QuantPolicy,
    StoredTensor,
    load_into,
    load_model_dir,
    read_component,
    save_model_dir,
    write_component,
)
from arrowdiff.weights.quantize import dequantize, quantize

POLICY = QuantPolicy(bits=4, group_size=16, keep=())


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "blocks.0.attn.weight": torch.randn(24, 40, generator=g),
        "blocks.0.mlp.weight": torch.randn(2, 8, 33, generator=g).to(torch.bfloat16),
        "blocks.0.norm.weight": torch.randn(40, generator=g),
        "tok_embed.weight": torch.randn(10, 16, generator=g),
    }


@pytest.mark.parametrize("bits", [32, 16, 8, 4, 2])
@pytest.mark.parametrize("method", ["rtn", "hqq"])
def test_component_round_trip(tmp_path, bits, method):
    ts = _tensors()
    policy = QuantPolicy(bits=bits, group_size=16, method=method, keep=(("*embed*", 8),))
    path = tmp_path / "backbone.parquet"
    write_component(path, ts, policy)
    stored = read_component(path, verify=True)
    assert list(stored) == list(ts)
    for name, w in ts.items():
        st = stored[name]
        assert st.shape == tuple(w.shape) and st.dtype == str(w.dtype).removeprefix("torch.")
        assert st.bits == policy.bits_for(name, w)
        expect = dequantize(quantize(w, st.bits, 16, method))  # the file holds exactly quantize()'s output
        assert torch.equal(st.to_tensor(torch.float32), expect)
        assert st.to_tensor().dtype == w.dtype
    assert stored["blocks.0.norm.weight"].bits == 32
    assert torch.equal(stored["blocks.0.norm.weight"].to_tensor(), ts["blocks.0.norm.weight"])


def test_pyarrow_lists_the_tensors(tmp_path):
    path = tmp_path / "c.parquet"
    write_component(path, _tensors(), POLICY)
    table = pq.read_table(path, columns=["name", "shape", "bits"])
    assert table.column("name").to_pylist() == list(_tensors())
    assert table.column("shape").to_pylist()[0] == [24, 40]
    md = pq.ParquetFile(path).metadata
    assert md.num_row_groups == len(_tensors())  # one row group per tensor
    assert md.metadata[b"arrowdiff.format_version"] == b"1.1"
    full = pq.read_table(path)  # the blob columns decode too
    assert full.column("payload")[0].as_py() == bytes(read_component(path)["blocks.0.attn.weight"].payload)


def _is_view_of_mmap(a: np.ndarray) -> bool:
    base = a
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def test_payload_is_a_zero_copy_view(tmp_path):
    path = tmp_path / "c.parquet"
    write_component(path, _tensors(), POLICY)
    for st in read_component(path).values():
        assert st.zero_copy and not st.payload.flags.owndata and not st.payload.flags.writeable
        assert _is_view_of_mmap(st.payload)
        assert np.shares_memory(st.payload, np.frombuffer(st.payload.base.base.obj, np.uint8))
        assert torch.from_numpy(st.payload.copy()).equal(st.quantized().packed)


def test_save_and_load_model_dir(tmp_path):
    heads = {"proj.weight": torch.randn(8, 16), "proj.bias": torch.randn(8)}
    comps = {"backbone": _tensors(), "heads/text": heads}
    save_model_dir(tmp_path / "m", comps, {"model_type": "unified_diffusion", "seed": 3}, POLICY)
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert meta["format_version"] == "1.1" and meta["seed"] == 3
    assert meta["components"] == {"backbone": "backbone.parquet", "heads/text": "heads/text.parquet"}
    assert meta["quantization"]["bit_width"] == 4 and meta["quantization"]["policy"]["group_size"] == 16
    loaded = load_model_dir(tmp_path / "m", verify=True)
    assert set(loaded.components) == {"backbone", "heads/text"}
    sd = loaded.state_dict("heads/text")
    assert torch.equal(sd["proj.bias"], heads["proj.bias"]) and sd["proj.weight"].dtype == torch.float32
    head = torch.nn.ModuleDict({"proj": torch.nn.Linear(16, 8)})
    loaded.load_into(head, "heads/text")
    assert torch.equal(head["proj"].bias.detach(), heads["proj.bias"])
    assert torch.equal(head["proj"].weight.detach(), sd["proj.weight"])
    with pytest.raises(ConfigError, match="heads/image"):
        loaded.state_dict("heads/image")
    assert not list((tmp_path / "m").rglob(".*tmp*"))  # atomic writes leave no temp files


def test_load_into_is_strict(tmp_path):
    path = tmp_path / "head.parquet"
    write_component(path, {"weight": torch.randn(8, 16), "extra": torch.randn(3)}, POLICY)
    stored = read_component(path)
    with pytest.raises(WeightFormatError) as e:
        load_into(torch.nn.Linear(12, 8), stored, "heads/text", path)
    msg = str(e.value)
    assert str(path) in msg and "missing ['bias']" in msg and "unexpected ['extra']" in msg
    assert "weight: file [8, 16] vs module [8, 12]" in msg


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_payload_byte_fails_the_checksum(tmp_path):
    path = tmp_path / "c.parquet"
    write_component(path, _tensors(), POLICY)
    st = read_component(path)["blocks.0.mlp.weight"]
    offset = (
        st.payload.__array_interface__["data"][0]
        - np.frombuffer(st.payload.base.base.obj, np.uint8).__array_interface__["data"][0]
    )
    del st
    _flip(path, offset + 5)
    stored = read_component(path)  # lazy: no error until the tensor is used
    with pytest.raises(WeightFormatError, match=r"checksum mismatch in tensor 'blocks.0.mlp.weight'"):
        stored["blocks.0.mlp.weight"].to_tensor()
    stored["blocks.0.attn.weight"].to_tensor()  # the others are fine
    with pytest.raises(WeightFormatError, match=str(path)):
        read_component(path, verify=True)


@pytest.mark.parametrize("keep", [0.5, 0.99, 8])
def test_truncated_file(tmp_path, keep):
    path = tmp_path / "c.parquet"
    write_component(path, _tensors(), POLICY)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:keep])
    with pytest.raises(WeightFormatError, match="truncated or corrupt") as e:
        read_component(path)
    assert str(path) in str(e.value)


def test_unknown_bits_in_file(tmp_path):
    path = tmp_path / "c.parquet"
    write_component(path, {"w": torch.randn(4, 16)}, POLICY)
    table = pq.read_table(path)
    bits = table.column("bits").to_pylist()
    table = table.set_column(
        table.schema.get_field_index("bits"), "bits", pa.array([3] * len(bits), pa.int8())
    )
    pq.write_table(table, path)
    with pytest.raises(WeightFormatError, match=r"tensor 'w' has bits=3"):
        read_component(path)


def test_bad_model_dirs(tmp_path):
    with pytest.raises(WeightFormatError, match="not found"):
        load_model_dir(tmp_path / "nope")
    with pytest.raises(WeightFormatError, match="metadata.json: missing"):
        load_model_dir(tmp_path)
    save_model_dir(tmp_path / "m", {"backbone": _tensors()}, {}, POLICY)
    meta_path = tmp_path / "m" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    assert meta["model_type"] == "unified_diffusion"
    meta_path.write_text(json.dumps({**meta, "format_version": "9.0"}))
    with pytest.raises(WeightFormatError, match="format_version '9.0'"):
        load_model_dir(tmp_path / "m")
    meta_path.write_text(json.dumps({**meta, "components": {"backbone": "../x.parquet"}}))
    with pytest.raises(WeightFormatError, match="relative"):
        load_model_dir(tmp_path / "m")
    del meta["quantization"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(WeightFormatError, match="quantization"):
        load_model_dir(tmp_path / "m")
    meta_path.write_text("{")
    with pytest.raises(WeightFormatError, match="JSON"):
        load_model_dir(tmp_path / "m")


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="'ids'"):
        write_component(tmp_path / "c.parquet", {"ids": torch.arange(4)}, POLICY)
    with pytest.raises(ConfigError, match="component name"):
        save_model_dir(tmp_path / "m", {"../evil": {}}, {}, POLICY)
    with pytest.raises(ConfigError, match="QuantPolicy"):
        write_component(tmp_path / "c.parquet", {}, {"bits": 4})
    assert not (tmp_path / "c.parquet").exists() and not list(tmp_path.glob(".*tmp*"))


def test_golden_bytes(tmp_path):
    """The payload/scales/zeros bytes of a fixed tensor set are part of the spec: changing them is a
    format change (bump FORMAT.md's version), not a refactor."""
    x = torch.arange(-48, 48, dtype=torch.float32).reshape(4, 24) / 16  # (4, 24)
    ts = {"w2": x, "w4": x.flip(0) * 1.5, "w8": x.T.contiguous(), "f16": x[:2] / 3, "b": x[0]}
    policy = QuantPolicy(bits=2, group_size=8, keep=(("w4", 4), ("w8", 8), ("f16", 16)))
    path = tmp_path / "golden.parquet"
    write_component(path, ts, policy)
    table = pq.read_table(path)
    digest = {}
    for col in ("payload", "scales", "zeros"):
        digest[col] = hashlib.sha256(b"".join(table.column(col).to_pylist())).hexdigest()
    assert table.column("bits").to_pylist() == [2, 4, 8, 16, 32]
    assert digest == GOLDEN


GOLDEN = {
    "payload": "e0331751cd4b778bce19e5a2b13b11caab1bf76a76afa6ec103e62d6994e5861",
    "scales": "581cef358b2534d4ac0a61d13f0260c066691c73e1beb76a796b1ffd1e9ab20d",
    "zeros": "cb1dacd1b20a7f3f112fd4bf1cdfa6c7115850c2e8cc95658473549c86f41ef1",
}


def test_golden_bytes_by_hand(tmp_path):
    # [-1, 0, 1, 2] at 2 bits: step s = (2 - -1) / 3 = 1, zero z = 1, codes q = w / s + z = [0, 1, 2, 3]
    path = tmp_path / "tiny.parquet"
    write_component(path, {"w": torch.tensor([[-1.0, 0.0, 1.0, 2.0]])}, QuantPolicy(bits=2, group_size=4))
    row = pq.read_table(path).to_pylist()[0]
    assert row["payload"] == bytes([0b11_10_01_00])  # first code in the low bits
    assert row["scales"] == b"\x00\x3c"  # fp16 1.0, little-endian
    assert row["zeros"] == b"\x01"
    assert (row["bits"], row["group_size"], row["method"], row["pad"], row["dtype"]) == (
        2,
        4,
        "rtn",
        0,
        "float32",
    )
    assert row["sha256"] == hashlib.sha256(b"\xe4\x00\x3c\x01").hexdigest()


def test_stored_tensor_is_lazy_and_uncached(tmp_path):
    path = tmp_path / "c.parquet"
    write_component(path, _tensors(), POLICY)
    st: StoredTensor = read_component(path)["blocks.0.attn.weight"]
    a, b = st.to_tensor(), st.to_tensor()
    assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    assert st.nbytes == 24 * 48 // 2 + 24 * 3 * (2 + 1)  # 40 cols padded to 48; fp16 scale + uint8 zero


def test_files_rewritten_by_other_tools_still_load(tmp_path):
    """A spec-conforming file written with other settings (compressed, dictionary) loads through pyarrow."""
    path = tmp_path / "c.parquet"
    ts = _tensors()
    write_component(path, ts, POLICY)
    expect = {k: v.to_tensor() for k, v in read_component(path).items()}
    pq.write_table(pq.read_table(path), tmp_path / "snappy.parquet", compression="snappy")
    stored = read_component(tmp_path / "snappy.parquet", verify=True)
    assert not any(st.zero_copy for st in stored.values())
    assert all(torch.equal(stored[k].to_tensor(), expect[k]) for k in ts)
