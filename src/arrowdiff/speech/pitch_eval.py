"""Pitch judges for speech: does a vocoder or a speech model render the voice's pitch?

Whisper reads words from whispered speech and GE2E hears timbre, so neither says whether the output is
voiced at the right pitch. These figures do, as vocoder papers report them (Morrison et al. 2022, "Chunked
Autoregressive GAN for Conditional Waveform Synthesis": pitch error in cents and voiced/unvoiced F1):

- ``f0_track``: probabilistic YIN (Mauch & Dixon 2014, ``librosa.pyin``) at the mel hop (256 samples at
  16 kHz), 50-400 Hz, the speech range of every voice in the data set.
- ``pitch_agreement``: frame-aligned comparison of a waveform with the real audio it should reproduce
  (a vocoder given that audio's mel): V/UV F1 with the real voiced frames as positives, and the RMS pitch
  error in cents over frames voiced in both.
- ``voicing``: voiced fraction and median F0 of a waveform on its own (generated speech is not
  frame-aligned with any real audio).

Not imported by the engine: benchmarks and tests only (``librosa`` comes with the speech judges).
"""

from __future__ import annotations

import math

import numpy as np

from arrowdiff.errors import ConfigError

F0_RANGE = (50.0, 400.0)
HOP = 256
FRAME = 1024


def f0_track(wave: np.ndarray, sr: int = 16_000) -> tuple[np.ndarray, np.ndarray]:
    """(f0 in Hz with NaN where unvoiced, voiced flags), one value per ``HOP`` samples."""
    try:
        import librosa
    except ImportError as e:  # pragma: no cover - the judges' extra
        raise ConfigError("pitch figures need librosa: pip install librosa") from e
    w = np.asarray(wave, dtype=np.float32).reshape(-1)
    if len(w) < FRAME:
        raise ConfigError(f"wave of {len(w)} samples is shorter than one pitch frame ({FRAME})")
    f0, voiced, _ = librosa.pyin(
        w, fmin=F0_RANGE[0], fmax=F0_RANGE[1], sr=sr, frame_length=FRAME, hop_length=HOP
    )
    return np.where(voiced, f0, np.nan), voiced.astype(bool)


def pitch_agreement(real: np.ndarray, wave: np.ndarray, sr: int = 16_000) -> dict[str, float]:
    """V/UV F1 and pitch RMSE (cents) of ``wave`` against the ``real`` audio it reproduces; frames are
    compared up to the shorter length."""
    f_r, v_r = f0_track(real, sr)
    f_w, v_w = f0_track(wave, sr)
    n = min(len(v_r), len(v_w))
    f_r, v_r, f_w, v_w = f_r[:n], v_r[:n], f_w[:n], v_w[:n]
    tp, voiced_total = float(np.sum(v_r & v_w)), float(v_r.sum() + v_w.sum())
    f1 = 2 * tp / voiced_total if voiced_total else math.nan  # nothing voiced in either: undefined
    both = v_r & v_w
    error = 1200 * np.log2(f_w[both] / f_r[both])
    rmse = float(np.sqrt(np.mean(error**2))) if both.any() else math.nan
    voiced = {"voiced_real": float(v_r.mean()), "voiced": float(v_w.mean())}
    return {"vuv_f1": f1, "f0_rmse_cents": rmse, **voiced}


def voicing(wave: np.ndarray, sr: int = 16_000) -> tuple[float, float]:
    """(voiced fraction, median F0 in Hz or NaN when nothing is voiced)."""
    f0, voiced = f0_track(wave, sr)
    return float(voiced.mean()), float(np.nanmedian(f0)) if voiced.any() else math.nan


def cents(f: float, reference: float) -> float:
    """Interval from ``reference`` to ``f`` in cents (NaN when either is not a positive number)."""
    if not (f > 0 and reference > 0):
        return math.nan
    return 1200.0 * math.log2(f / reference)


__all__ = ["F0_RANGE", "cents", "f0_track", "pitch_agreement", "voicing"]
