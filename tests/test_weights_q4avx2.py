"""q4avx2: our AVX2 Q4_1 x Q8_1 kernel (llama.cpp's arithmetic) against a pure-torch reference of the same
arithmetic, against fp32 within the error its two quantizations imply, and as a QuantLinear compute form.

The kernel compiles on first use (about 10 s, then cached in torch's extension directory); every test
that needs it is skipped, with the reason, where it cannot be built (no C++ compiler, no AVX2).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import require_q4avx2

from arrowdiff.errors import ConfigError
from arrowdiff.weights import QuantPolicy, q4avx2, read_component, write_component
from arrowdiff.weights.lazy_linear import QuantLinear

SHAPES = [(48, 128), (17, 576), (9, 100), (5, 10)]  # (N, K): K = 100 and 10 are not multiples of 32


@pytest.fixture(scope="module")
def kernel() -> None:
    require_q4avx2()


def _case(n: int, k: int, m: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 1000 + n * k + m)
    w, x = torch.randn(n, k, generator=g) / k**0.5, torch.randn(m, k, generator=g)
    return w, x, torch.randn(n, generator=g)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize(("n", "k"), SHAPES)
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("with_bias", [False, True])
def test_kernel_matches_reference_and_fp32(kernel, bits, n, k, m, with_bias) -> None:
    w, x, b = _case(n, k, m)
    bias = b if with_bias else None
    blocks = q4avx2.quantize_blocks(w, bits)
    assert blocks.shape == (n, -(-k // 32) * q4avx2.BLOCK_BYTES[bits])  # K padded to whole blocks
    y = q4avx2.gemm(x, blocks, bits, bias)
    ref = q4avx2.reference_gemm(x, blocks, bits, bias)
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert (y - ref).abs().max() <= 1e-4 * ref.abs().max()  # same arithmetic, other summation order

    # against fp32: weight error |w - w_q| and activation rounding (half a step dx per value) bound it
    wq = q4avx2.dequantize_blocks(blocks, bits, k)
    _, dx, _ = q4avx2.reference_quantize_activations(x)
    half_step = (dx / 2).repeat_interleave(32, dim=1)[:, :k]  # (M, K)
    bound = x.abs() @ (w - wq).abs().T + half_step @ wq.abs().T
    exact = F.linear(x, w, bias)
    assert ((y - exact).abs() <= 1.001 * bound + 1e-5).all()
    # the weight error itself: half a quantization step, plus the fp16 rounding of d and m
    _, d, mins = q4avx2.decode_blocks(blocks, bits)
    pad = (-k) % 32
    err = F.pad(w - wq, (0, pad)).reshape(n, -1, 32).abs().amax(-1)  # (N, blocks)
    assert (err <= 0.5 * d * 1.01 + 2e-3 * (mins.abs() + 16 * d)).all()


@pytest.mark.parametrize("m", [1, 70])  # 70: past one 64-row chunk of x, and a 2-row tail tile
def test_kernel_on_two_threads(kernel, m) -> None:
    """Output rows split over threads (250 rows: chunk edges off the 4-row decode tiles) give the same
    answer as the reference."""
    w, x, b = _case(250, 256, m, seed=2)
    blocks = q4avx2.quantize_blocks(w, 4)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        y = q4avx2.gemm(x, blocks, 4, b)
    finally:
        torch.set_num_threads(before)
    ref = q4avx2.reference_gemm(x, blocks, 4, b)
    assert (y - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_activation_quantization_matches_reference(kernel) -> None:
    x = torch.randn(3, 100, generator=torch.Generator().manual_seed(1)) * 5
    x[1, 32:64] = 0  # an all-zero block: codes 0, scale 0
    q, ds = torch.ops.arrowdiff_q4avx2.quantize_activations(x)
    rq, dx, sx = q4avx2.reference_quantize_activations(x)
    assert torch.equal(q, rq) and torch.equal(ds[..., 0], dx) and torch.equal(ds[..., 1], sx)
    assert dx[1, 1] == 0 and (q[1, 32:64] == 0).all()


def test_bad_inputs_are_clear_errors(kernel) -> None:
    blocks = q4avx2.quantize_blocks(torch.randn(4, 64), 4)
    with pytest.raises(RuntimeError, match="in_features=96"):
        q4avx2.gemm(torch.randn(1, 96), blocks, 4)
    with pytest.raises(RuntimeError, match="bits must be 4 or 8"):
        q4avx2.gemm(torch.randn(1, 64), blocks, 3)


def _stored(tmp_path, n, k, bits, method="rtn", group_size=32):
    g = torch.Generator().manual_seed(bits * 7 + group_size)
    tensors = {"weight": torch.randn(n, k, generator=g) / k**0.5, "bias": torch.randn(n, generator=g)}
    path = tmp_path / f"layer{bits}{method}{group_size}.parquet"
    write_component(path, tensors, QuantPolicy(bits=bits, group_size=group_size, method=method, keep=()))
    return read_component(path)


@pytest.mark.parametrize(
    ("bits", "method", "group_size", "how"),
    [(4, "rtn", 32, "reused"), (4, "hqq", 64, "reused"), (2, "hqq", 32, "reused"), (8, "rtn", 32, "reused"),
     (4, "rtn", 16, "requantized"), (16, "rtn", 32, "requantized")],
)  # fmt: skip
def test_weight_blocks_keep_stored_codes(tmp_path, bits, method, group_size, how) -> None:
    """Stored 2/4/8-bit codes with groups of 32k are carried over exactly (m only rounded to fp16)."""
    st = _stored(tmp_path, 24, 100, bits, method, group_size)["weight"]
    blocks, block_bits, got = q4avx2.weight_blocks(st)
    assert got == how and block_bits == (4 if bits <= 4 else 8)
    wq = q4avx2.dequantize_blocks(blocks, block_bits, 100)
    stored = st.to_tensor(torch.float32)
    _, d, mins = q4avx2.decode_blocks(blocks, block_bits)
    step = d.repeat_interleave(32, dim=1)[:, :100]
    if how == "reused":
        tol = 2.0**-11 * mins.abs().repeat_interleave(32, dim=1)[:, :100] + 1e-7
        assert ((wq - stored).abs() <= tol).all()
    else:
        assert ((wq - stored).abs() <= 0.51 * step + 1e-3 * stored.abs().max()).all()


@pytest.mark.parametrize("rows", [1, 5])
def test_quant_linear_round_trip(tmp_path, kernel, rows) -> None:
    st = _stored(tmp_path, 48, 128, 4, "hqq")
    layer = QuantLinear(st["weight"], st["bias"], "q4avx2")
    assert not layer.materialized
    x = torch.randn(2, rows, 128, generator=torch.Generator().manual_seed(3))
    y = layer(x)
    assert layer.materialized and layer.block_bits == 4 and y.shape == (2, rows, 48) and y.dtype == x.dtype
    ref = q4avx2.reference_gemm(x.reshape(-1, 128), layer.w, 4, st["bias"].to_tensor()).reshape(y.shape)
    assert (y - ref).abs().max() <= 1e-4 * ref.abs().max()
    exact = F.linear(x, st["weight"].to_tensor(), st["bias"].to_tensor())
    assert (y - exact).abs().max() <= 3e-2 * exact.abs().max()
    assert layer(x.bfloat16()).dtype == torch.bfloat16
    assert not layer.state_dict()
    with pytest.raises(ConfigError, match="takes 128"):
        layer(torch.randn(1, 64))


def test_unavailable_kernel_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(q4avx2, "_status", (False, "no C++ compiler ('c++' is not on PATH)"))
    st = _stored(tmp_path, 8, 64, 4)
    with pytest.raises(ConfigError, match="q4avx2.*unavailable.*compiler.*int4pack"):
        QuantLinear(st["weight"], None, "q4avx2").materialize()


def test_build_reports_a_missing_compiler(monkeypatch) -> None:
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    ok, why = q4avx2._build()
    assert not ok and why  # the compiler (or, on other CPUs, the missing AVX2) is named
    monkeypatch.setenv(q4avx2.DISABLE_ENV, "0")
    assert q4avx2._build() == (False, f"disabled by {q4avx2.DISABLE_ENV}=0")


# -- fused decode-step ops (kernels/decode_ops.cpp) against the torch code of arrowdiff.ar.llama ----------


@pytest.mark.parametrize("shape", [(1, 1, 576), (3, 100), (2, 5)])  # D = 100, 5: past the 8-wide loop
@pytest.mark.parametrize("with_x", [True, False])
def test_add_rms_norm_matches_torch(kernel, shape, with_x) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    r, x, w = (
        torch.randn(shape, generator=g) * 3,
        torch.randn(shape, generator=g),
        torch.randn(shape[-1], generator=g),
    )
    total = r + x if with_x else r.clone()
    y = q4avx2.add_rms_norm(x if with_x else None, r, w, 1e-5)
    torch.testing.assert_close(r, total, atol=0, rtol=0)  # the residual add happened in place
    torch.testing.assert_close(y, F.rms_norm(total, (shape[-1],), w, 1e-5), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1, 2 * 1536), (2, 2 * 13)])
def test_silu_mul_matches_torch(kernel, shape) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(5)) * 6
    x.view(-1)[:4] = torch.tensor([-100.0, 100.0, 0.0, -0.0])  # saturated sigmoid both ways
    gate, up = x.split(shape[-1] // 2, dim=-1)
    torch.testing.assert_close(q4avx2.silu_mul(x), F.silu(gate) * up, atol=1e-5, rtol=1e-5)


def _attention_reference(qkv, k_cache, v_cache, cos, sin, pos, n_heads, n_kv_heads):
    """The torch path of arrowdiff.ar.llama.Attention for one token: RoPE, cache write, GQA SDPA."""
    from arrowdiff.ar.llama import apply_rope

    b = qkv.shape[0]
    hd = k_cache.shape[-1]
    x = qkv.view(b, 1, n_heads + 2 * n_kv_heads, hd).transpose(1, 2)
    q, k = apply_rope(x[:, : n_heads + n_kv_heads], cos[pos : pos + 1], sin[pos : pos + 1]).split(
        [n_heads, n_kv_heads], dim=1
    )
    k_cache[:b, :, pos : pos + 1] = k
    v_cache[:b, :, pos : pos + 1] = x[:, n_heads + n_kv_heads :]
    keys, values = k_cache[:b, :, : pos + 1], v_cache[:b, :, : pos + 1]
    y = F.scaled_dot_product_attention(q, keys, values, enable_gqa=True)
    return y.transpose(1, 2).reshape(b, 1, -1)


@pytest.mark.parametrize(("heads", "kv_heads", "hd"), [(9, 3, 64), (4, 4, 6), (4, 1, 16)])
@pytest.mark.parametrize("pos", [0, 7, 300])  # 300: a long cache, past the threshold for threads
@pytest.mark.parametrize("batch", [1, 2])
def test_decode_attention_matches_torch(kernel, heads, kv_heads, hd, pos, batch) -> None:
    from arrowdiff.ar.llama import rope_tables

    g = torch.Generator().manual_seed(pos * 10 + hd + batch)
    cos, sin = rope_tables(hd, 512, 10000.0)
    shape = (batch + 1, kv_heads, 320, hd)  # the cache holds one more sequence than is decoded
    k_cache, v_cache = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    qkv = torch.randn(batch, 1, (heads + 2 * kv_heads) * hd, generator=g) * 2
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    ref = _attention_reference(qkv, ref_k, ref_v, cos, sin, pos, heads, kv_heads)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        y = q4avx2.decode_attention(qkv, k_cache, v_cache, cos, sin, pos, heads, kv_heads)
    finally:
        torch.set_num_threads(before)
    assert y.shape == (batch, 1, heads * hd)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k_cache, ref_k, atol=1e-5, rtol=1e-5)  # the rotated key went in at pos
    assert torch.equal(v_cache, ref_v)


def test_decode_ops_bad_inputs_are_clear_errors(kernel) -> None:
    cache = torch.zeros(1, 2, 8, 16)
    cos = sin = torch.zeros(8, 16)
    with pytest.raises(RuntimeError, match="outside the cache"):
        q4avx2.decode_attention(torch.zeros(1, 1, 8 * 16), cache, cache.clone(), cos, sin, 8, 4, 2)
    with pytest.raises(RuntimeError, match="qkv rows must hold 128"):
        q4avx2.decode_attention(torch.zeros(1, 1, 64), cache, cache.clone(), cos, sin, 0, 4, 2)
    with pytest.raises(RuntimeError, match="contiguous float32"):
        q4avx2.add_rms_norm(None, torch.zeros(2, 4, dtype=torch.bfloat16), torch.ones(4), 1e-5)
