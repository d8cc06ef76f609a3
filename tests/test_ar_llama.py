"""The AR path on tiny random LLaMA configs: KV cache, model directories and compute forms, GGUF block
conversion, the GGUF tokenizer builder, InferenceCore sampling, streaming and stop strings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_q4avx2
from tokenizers import Tokenizer, pre_tokenizers

from arrowdiff.ar.gguf_convert import q4_1_blocks, q8_0_blocks, rope_row_order
from arrowdiff.ar.gguf_tokenizer import tokenizer_from_gguf_fields
from arrowdiff.ar.inference import InferenceCore, stop_filtered
from arrowdiff.ar.llama import LlamaConfig, LlamaModel
from arrowdiff.ar.load import load_llama, save_llama
from arrowdiff.errors import ConfigError
from arrowdiff.weights import QuantPolicy, dequantize, q4avx2

EOT = "<|endoftext|>"
MERGES = ["t h", "th e", "Ġ the", "a t", "Ġ c", "Ġc at"]


def tiny_tokenizer() -> Tokenizer:
    """Byte-level BPE built through the GGUF tokenizer path: 256 byte symbols, 6 merges, <|endoftext|>."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merged = [m.replace(" ", "") for m in MERGES]
    tokens = alphabet + merged + [EOT]
    fields = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": MERGES,
        "tokenizer.ggml.token_type": [1] * (len(tokens) - 1) + [3],
    }
    return tokenizer_from_gguf_fields(fields)


def tiny_config(**kw: object) -> LlamaConfig:
    tok_vocab = 256 + len(MERGES) + 1
    base = dict(vocab_size=tok_vocab, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96)
    base.update(max_seq_len=128, rope_theta=10000.0, bos_id=None, eos_id=tok_vocab - 1)
    base.update(kw)
    return LlamaConfig(**base)  # type: ignore[arg-type]


def tiny_model(seed: int = 0, **kw: object) -> LlamaModel:
    torch.manual_seed(seed)
    model = LlamaModel(tiny_config(**kw))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny_llama") / "model"
    save_llama(tiny_model(), tiny_tokenizer(), out, QuantPolicy(bits=4, group_size=32))
    return out


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="multiple of n_kv_heads"):
        tiny_config(n_heads=4, n_kv_heads=3)
    with pytest.raises(ConfigError, match="even head width"):
        tiny_config(dim=60, n_heads=4)
    with pytest.raises(ConfigError, match="unknown LlamaConfig keys"):
        LlamaConfig.from_dict({"width": 3})


@pytest.mark.parametrize("tie", [True, False])
def test_kv_cache_decode_equals_full_forward(tie: bool) -> None:
    model = tiny_model(tie_embeddings=tie)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 12))
    with torch.no_grad():
        full = model(ids)  # (B, T, V)
        cache = model.new_cache(2, 16)
        parts = [model(ids[:, :5], cache), model(ids[:, 5:9], cache)]  # a cached multi-token chunk too
        parts += [model(ids[:, t : t + 1], cache) for t in range(9, 12)]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def _greedy(model: LlamaModel, prompt: list[int], steps: int, fused: bool) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and the logits (steps, V) they came from: prefill, then one-token decode steps."""
    model.fused_decode = fused
    cache = model.new_cache(1, len(prompt) + steps)
    tokens, rows = [], []
    with torch.inference_mode():
        logits = model(torch.tensor([prompt]), cache)[0, -1]
        for _ in range(steps):
            rows.append(logits)
            tokens.append(int(logits.argmax()))
            logits = model(torch.tensor([tokens[-1:]]), cache)[0, -1]
    return tokens, torch.stack(rows)


@pytest.fixture
def fused_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the decode steps that took the fused path (calls of the fused attention op)."""
    calls: list[int] = []
    real = q4avx2.decode_attention

    def counted(*args: object) -> torch.Tensor:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(q4avx2, "decode_attention", counted)
    return calls


def _need_kernel() -> None:
    require_q4avx2()


@pytest.mark.parametrize("tie", [True, False])
def test_fused_decode_equals_reference_path(tie: bool, fused_calls: list[int]) -> None:
    """The fused one-token path (add_rms_norm, decode_attention, silu_mul) decodes the same greedy tokens
    with near-identical logits as the torch path, over a cache that grows from the prompt to 45 positions."""
    _need_kernel()
    model = tiny_model(tie_embeddings=tie)
    prompt = torch.randint(0, model.cfg.vocab_size, (5,), generator=torch.Generator().manual_seed(1)).tolist()
    ref_tokens, ref_logits = _greedy(model, prompt, 40, fused=False)
    assert not fused_calls
    tokens, logits = _greedy(model, prompt, 40, fused=True)
    assert len(fused_calls) == 40 * model.cfg.n_layers  # every decode step, none in the prefill
    assert tokens == ref_tokens
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)


def test_fused_decode_with_q4avx2_linears(tiny_llama_dir: Path, fused_calls: list[int]) -> None:
    _need_kernel()
    model = load_llama(tiny_llama_dir, "q4avx2").model
    ref_tokens, ref_logits = _greedy(model, [3, 1, 4, 1, 5], 20, fused=False)
    tokens, logits = _greedy(model, [3, 1, 4, 1, 5], 20, fused=True)
    assert fused_calls and tokens == ref_tokens
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)


def test_decode_falls_back_without_the_extension_or_with_autograd(
    monkeypatch: pytest.MonkeyPatch, fused_calls: list[int]
) -> None:
    """No extension loaded, gradients on, or bf16 activations: the torch path, with the same results."""
    model = tiny_model()
    ids = torch.randint(0, model.cfg.vocab_size, (1, 6))
    with torch.no_grad():
        full = model(ids)
    monkeypatch.setattr(q4avx2, "_status", (False, "no C++ compiler (test)"))
    cache = model.new_cache(1, 6)
    with torch.no_grad():
        parts = [model(ids[:, :4], cache), model(ids[:, 4:5], cache)]
    parts.append(model(ids[:, 5:6], cache))  # gradients on (a training step may decode)
    assert parts[-1].requires_grad
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert not fused_calls


def test_context_overflow_is_a_clear_error() -> None:
    model = tiny_model()
    cache = model.new_cache(1, 4)
    with pytest.raises(ConfigError, match="exceed the context"):
        model(torch.zeros(1, 5, dtype=torch.long), cache)


@pytest.mark.parametrize(
    ("compute", "tol"), [("fp32", 1e-4), ("bf16", 0.1), ("int4pack", 0.1), ("q4avx2", 0.1)]
)
def test_model_dir_round_trip(tiny_llama_dir: Path, compute: str, tol: float) -> None:
    """A 4-bit directory loads in every compute form; bf16/int4pack/q4avx2 stay close to the dequantized
    fp32."""
    if compute == "q4avx2":
        require_q4avx2()
    ref = load_llama(tiny_llama_dir, "fp32").model
    got = load_llama(tiny_llama_dir, compute)
    assert got.compute == compute
    ids = torch.randint(0, ref.cfg.vocab_size, (1, 10))
    with torch.no_grad():
        a, b = ref(ids), got.model(ids)
    assert (a - b).abs().max().item() <= tol * a.abs().max().item()


def test_auto_compute_picks_q4avx2_or_int4pack_for_4_bit(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ok, _ = q4avx2.kernel_status()
    assert load_llama(tiny_llama_dir).compute == ("q4avx2" if ok else "int4pack")
    monkeypatch.setattr(q4avx2, "_status", (False, "no C++ compiler (test)"))
    with caplog.at_level("WARNING", logger="arrowdiff.ar.load"):
        assert load_llama(tiny_llama_dir).compute == "int4pack"  # a missing compiler never breaks loading
    assert "no C++ compiler (test)" in caplog.text
    with pytest.raises(ConfigError, match="q4avx2.*unavailable"):
        load_llama(tiny_llama_dir, "q4avx2")


def test_rope_row_order_inverts_llama_cpp_permutation() -> None:
    """llama.cpp's convert script permutes Q/K rows; our order restores the Hugging Face layout."""
    n_head, rows = 3, 3 * 8
    w = torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2)
    gguf = w.reshape(n_head, 2, rows // n_head // 2, 2).swapaxes(1, 2).reshape(rows, 2)  # llama.cpp permute
    torch.testing.assert_close(gguf[rope_row_order(rows, n_head)], w)


def test_q4_1_and_q8_0_blocks_carry_over() -> None:
    rng = np.random.default_rng(0)
    rows, cols = 3, 64
    d = rng.uniform(0.01, 0.1, (rows, cols // 32)).astype(np.float16)
    m = rng.uniform(-0.5, 0.0, (rows, cols // 32)).astype(np.float16)
    q = rng.integers(0, 16, (rows, cols // 32, 32)).astype(np.uint8)
    qs = (q[..., :16] | (q[..., 16:] << 4)).astype(np.uint8)
    raw = np.concatenate([d[..., None].view(np.uint8), m[..., None].view(np.uint8), qs], axis=-1)
    want = (q * d[..., None].astype(np.float32) + m[..., None].astype(np.float32)).reshape(rows, cols)
    got = dequantize(q4_1_blocks(raw.reshape(rows, -1), (rows, cols))).numpy()
    step = float(d.astype(np.float32).max())
    assert np.abs(got - want).max() <= 0.01 * step  # fp16 zero point: far below one quantization step
    q8 = rng.integers(-127, 128, (rows, cols // 32, 32)).astype(np.int8)
    raw8 = np.concatenate([d[..., None].view(np.uint8), q8.view(np.uint8)], axis=-1)
    want8 = (q8.astype(np.float32) * d[..., None].astype(np.float32)).reshape(rows, cols)
    np.testing.assert_array_equal(
        dequantize(q8_0_blocks(raw8.reshape(rows, -1), (rows, cols))).numpy(), want8
    )


def test_gguf_tokenizer_round_trip_and_specials() -> None:
    tok = tiny_tokenizer()
    enc = tok.encode(f"the cat sat 123{EOT}", add_special_tokens=False)
    assert "Ġthe" not in enc.tokens and "the" in enc.tokens and "Ġcat" in enc.tokens
    assert enc.tokens[-1] == EOT  # a control token stays whole
    assert [t for t in enc.tokens if t in "123"] == ["1", "2", "3"]  # smollm: digits one by one
    assert tok.decode(enc.ids, skip_special_tokens=True) == "the cat sat 123"


def test_stop_filtered_holds_back_partial_stop_strings() -> None:
    pieces = ["Hel", "lo\n", "\nWor", "ld"]
    assert "".join(stop_filtered(iter(pieces), ["\n\n"])) == "Hello"
    assert "".join(stop_filtered(iter(pieces), ["xyz"])) == "Hello\n\nWorld"
    assert list(stop_filtered(iter(["ab", "c"]), ["bd"])) == ["a", "bc"]  # 'b' waited, then released


def test_inference_core_sampling_streaming_and_stop(tiny_llama_dir: Path) -> None:
    loaded = load_llama(tiny_llama_dir, "fp32")
    core = InferenceCore(loaded.model, loaded.tokenizer)
    greedy = core.generate("the cat", 12, temperature=0.0)
    assert greedy == core.generate("the cat", 12, temperature=0.0)
    a = core.generate("the cat", 12, temperature=1.0, top_k=20, top_p=0.9, seed=3)
    assert a == core.generate("the cat", 12, temperature=1.0, top_k=20, top_p=0.9, seed=3)
    assert a == "".join(core.stream("the cat", 12, temperature=1.0, top_k=20, top_p=0.9, seed=3))
    assert 0 < core.last_timing["new_tokens"] <= 12
    if len(greedy) > 2:
        stop = greedy[1:3]
        assert core.generate("the cat", 12, temperature=0.0, stop=[stop]) == greedy[: greedy.find(stop)]


def test_cli_generate_streams_from_a_llama_dir(
    tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from arrowdiff.cli import main

    argv = ["generate", "--model", str(tiny_llama_dir), "--prompt", "the", "--max-new-tokens", "6"]
    assert main([*argv, "--temperature", "0"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("the") and main([*argv, "--temperature", "0"]) == 0
    assert capsys.readouterr().out == first  # greedy is deterministic
    assert main([*argv, "--top-k", "-1"]) == 2
    assert "top_k=-1" in capsys.readouterr().err
