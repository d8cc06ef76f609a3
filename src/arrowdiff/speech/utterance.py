"""One synthesised sentence -> the stored utterance: pitch shift, loudness, PCM, mel codes, phone durations.

Loudness: the gain brings the RMS of the ACTIVE frames (20 ms frames within 40 dB of the loudest one, so
leading and trailing pauses do not count) to ``TARGET_DBFS``, unless that would push the peak over
``PEAK_LIMIT``, in which case the peak sets the gain. The wave is then stored as 16-bit PCM and the mel is
computed from exactly those samples, so the stored wave and mel agree.

Durations: phone i ends at mel frame ``round(end_s * sample_rate / hop)``, clipped to the utterance's
``n_frames = n_samples // hop + 1`` (mel.py's count) and made non-decreasing; the last phone ends at
``n_frames`` exactly (flite's diphone voice kal16 truncates its final pause, festival's waves run ~30 ms
past the last phone). Durations are the differences: non-negative and summing to ``n_frames``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arrowdiff.errors import ConfigError
from arrowdiff.speech.engines import Synth, pitch_shift
from arrowdiff.speech.mel import MelConfig, log_mel, quantize_mel
from arrowdiff.speech.phones import UNK_ID, phone_id

TARGET_DBFS = -20.0
PEAK_LIMIT = 0.95
_FRAME = 320  # 20 ms at 16 kHz
_ACTIVE_DB = 40.0
MEL = MelConfig()


@dataclass(frozen=True)
class Utterance:
    """A processed utterance: ``pcm`` int16 (N,), ``mel`` uint8 (n_frames, n_mels), ``phones`` and
    ``durations`` int16 (n_phones,), the raw phone names and whether the peak limit set the gain."""

    pcm: np.ndarray
    mel: np.ndarray
    phones: np.ndarray
    durations: np.ndarray
    phone_names: tuple[str, ...]
    peak_limited: bool

    @property
    def n_unknown(self) -> int:
        return int((self.phones == UNK_ID).sum())


def active_rms(x: np.ndarray) -> float:
    """RMS over the 20 ms frames whose RMS is within 40 dB of the loudest frame."""
    n = len(x) // _FRAME * _FRAME
    frames = x[:n].reshape(-1, _FRAME) if n else x[None, :]
    power = (frames.astype(np.float64) ** 2).mean(axis=1)
    active = power >= power.max() * 10 ** (-_ACTIVE_DB / 10)
    return float(np.sqrt(power[active].mean()))


def normalize_loudness(
    x: np.ndarray, target_dbfs: float = TARGET_DBFS, peak: float = PEAK_LIMIT
) -> tuple[np.ndarray, bool]:
    """Scale ``x`` to an active RMS of ``target_dbfs`` with its peak at most ``peak``; returns the scaled
    wave and whether the peak limit decided the gain."""
    rms, top = active_rms(x), float(np.abs(x).max())
    if rms <= 0 or top <= 0:
        raise ConfigError("cannot normalise the loudness of a silent utterance")
    gain = 10 ** (target_dbfs / 20) / rms
    limited = gain * top > peak
    if limited:
        gain = peak / top
    return (x * gain).astype(np.float32), limited


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """Float [-1, 1] -> int16 PCM (round to nearest, clip)."""
    return np.clip(np.rint(x * 32767.0), -32768, 32767).astype(np.int16)


def phone_durations(ends_s: list[float], n_frames: int, cfg: MelConfig = MEL) -> np.ndarray:
    """Phone end times in seconds -> int16 durations in mel frames summing to ``n_frames``."""
    if not ends_s:
        raise ConfigError("an utterance needs at least one phone")
    ends = np.floor(np.asarray(ends_s, dtype=np.float64) * cfg.sample_rate / cfg.hop + 0.5).astype(np.int64)
    ends = np.maximum.accumulate(np.clip(ends, 0, n_frames))
    ends[-1] = n_frames
    return np.diff(ends, prepend=0).astype(np.int16)


def process(synth: Synth, cents: float, cfg: MelConfig = MEL) -> Utterance:
    """Pitch-shift (sox), normalise, quantise and analyse one synthesised sentence."""
    x = pitch_shift(synth.wave, cents)
    x, limited = normalize_loudness(x)
    pcm = to_pcm16(x)
    with torch.no_grad():
        mel = quantize_mel(log_mel(pcm.astype(np.float32) / 32768.0, cfg)).T
    n_frames = cfg.num_frames(len(pcm))
    assert mel.shape == (n_frames, cfg.n_mels), mel.shape
    names = tuple(p for p, _ in synth.phones)
    ids = np.asarray([phone_id(p) for p in names], dtype=np.int16)
    durations = phone_durations([t for _, t in synth.phones], n_frames, cfg)
    return Utterance(pcm, np.ascontiguousarray(mel), ids, durations, names, bool(limited))


__all__ = [
    "TARGET_DBFS",
    "PEAK_LIMIT",
    "Utterance",
    "active_rms",
    "normalize_loudness",
    "to_pcm16",
    "phone_durations",
    "process",
]
