"""ArrowQuant math: packing, quantization error bounds, HQQ vs RTN, policy rules."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arrowdiff.errors import ConfigError
from arrowdiff.weights import QuantPolicy, dequantize, pack, quantize, unpack


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from([2, 4, 8]), data=st.data())
def test_pack_unpack_round_trip(bits, data):
    codes = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=67))
    c = torch.tensor(codes, dtype=torch.uint8)
    packed = pack(c, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(len(codes) * bits / 8)
    assert torch.equal(unpack(packed, bits, len(codes)), c)


def test_pack_is_little_endian_within_a_byte():
    assert pack(torch.tensor([1, 2, 3, 0], dtype=torch.uint8), 2).tolist() == [0b00_11_10_01]
    assert pack(torch.tensor([0xA, 0x5, 0xF], dtype=torch.uint8), 4).tolist() == [0x5A, 0x0F]


@pytest.mark.parametrize("bad", [(torch.tensor([4], dtype=torch.uint8), 2), (torch.tensor([1]), 4)])
def test_pack_rejects_bad_codes(bad):
    with pytest.raises(ConfigError):
        pack(*bad)


@pytest.mark.parametrize("bits", [1, 3, 16, 32, True])
def test_pack_rejects_bad_bits(bits):
    with pytest.raises(ConfigError, match="bits"):
        pack(torch.zeros(4, dtype=torch.uint8), bits)


@settings(max_examples=40, deadline=None)
@given(
    bits=st.sampled_from([2, 4, 8]),
    group_size=st.sampled_from([1, 3, 8, 32]),
    rows=st.integers(1, 5),
    cols=st.integers(1, 40),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_rtn_error_is_at_most_half_a_step(bits, group_size, rows, cols, scale, seed):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * scale
    q = quantize(w, bits, group_size, "rtn")
    err = (dequantize(q) - w).abs()  # (rows, cols)
    pad = (-cols) % group_size
    assert q.pad == pad and q.scales.dtype == torch.float16 and q.zeros.dtype == torch.uint8
    step = q.scales.float().repeat_interleave(group_size, dim=1)[:, :cols]
    assert (err <= step / 2 * (1 + 1e-5) + 1e-7).all()


@pytest.mark.parametrize("bits", [2, 4])
def test_hqq_has_lower_mse_than_rtn(bits):
    w = torch.randn(128, 256, generator=torch.Generator().manual_seed(0))
    mse = {m: ((dequantize(quantize(w, bits, 64, m)) - w) ** 2).mean().item() for m in ("rtn", "hqq")}
    assert mse["hqq"] < mse["rtn"]


@pytest.mark.parametrize("method", ["rtn", "hqq"])
@pytest.mark.parametrize("shape", [(3, 4, 70), (5,), (), (0, 8), (2, 0)])
def test_quantize_keeps_shape_and_dtype(method, shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    for bits in (2, 4, 8, 16, 32):
        out = dequantize(quantize(w, bits, 32, method), torch.bfloat16)
        assert out.shape == w.shape and out.dtype == torch.bfloat16


def test_float_bits_are_raw_floats():
    w = torch.randn(4, 6)
    q32 = quantize(w, 32, 64)
    assert q32.method == "none" and q32.packed.numel() == 4 * 6 * 4
    assert torch.equal(dequantize(q32), w)
    assert torch.equal(dequantize(quantize(w, 16, 64)), w.half().float())


def test_constant_and_zero_groups_are_exact():
    w = torch.tensor([[0.0] * 8, [0.5] * 8])
    for method in ("rtn", "hqq"):
        assert torch.allclose(dequantize(quantize(w, 4, 8, method)), w, atol=1e-3)


@pytest.mark.parametrize(
    "args",
    [(3, 64, "rtn"), (4, 0, "rtn"), (4, -8, "rtn"), (4, 64, "gptq"), (4, 2.5, "rtn")],
)
def test_quantize_rejects_bad_arguments(args):
    with pytest.raises(ConfigError):
        quantize(torch.randn(4, 8), *args)


def test_quantize_rejects_bad_tensors():
    with pytest.raises(ConfigError, match="floating"):
        quantize(torch.arange(8).reshape(2, 4), 4, 4)
    with pytest.raises(ConfigError, match="NaN"):
        quantize(torch.tensor([[float("nan"), 1.0]]), 4, 2)
    with pytest.raises(ConfigError, match="fp16"):
        quantize(torch.tensor([[1e6, -1e6]]), 16, 2)


def test_policy_rules():
    p = QuantPolicy(bits=4, group_size=32, keep=(("*embed*", 8), ("head.weight", 16)))
    m = torch.zeros(4, 4)
    assert p.bits_for("blocks.0.attn.weight", m) == 4
    assert p.bits_for("tok_embed.weight", m) == 8
    assert p.bits_for("head.weight", m) == 16
    assert p.bits_for("blocks.0.norm.weight", torch.zeros(4)) == 32  # 1-D -> vector_bits
    assert QuantPolicy(bits=32).bits_for("tok_embed.weight", m) == 32  # rules never lower the width
    assert QuantPolicy(bits=16, vector_bits=8).bits_for("b", torch.zeros(4)) == 16
    assert QuantPolicy.from_dict(p.to_dict()) == p
    assert QuantPolicy.from_dict({**p.to_dict(), "keep": [["*x*", 8]]}).keep == (("*x*", 8),)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits": 5},
        {"group_size": 0},
        {"method": "awq"},
        {"keep": (("*", 3),)},
        {"keep": "*"},
        {"vector_bits": 1},
    ],
)
def test_policy_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        QuantPolicy(**kwargs)


def test_quantize_never_aliases_its_input():
    w = torch.randn(4, 8)
    q = quantize(w, 32, 8)
    w += 1
    assert not torch.equal(dequantize(q), w)
