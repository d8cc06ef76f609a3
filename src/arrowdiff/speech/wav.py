"""16-bit PCM WAV files: the one reader and writer of the speech code (standard library ``wave``)."""

from __future__ import annotations

import wave as wavelib
from pathlib import Path

import numpy as np

from arrowdiff.errors import ConfigError


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM WAV file -> (float32 mono samples in [-1, 1], sample rate). No resampling."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"reference audio {p} does not exist")
    try:
        with wavelib.open(str(p), "rb") as w:
            sr, ch, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
    except (wavelib.Error, EOFError) as e:
        raise ConfigError(
            f"{p} is not a readable PCM WAV file ({e}); convert it: sox in.x -b 16 out.wav"
        ) from e
    if width not in (1, 2, 4):
        raise ConfigError(f"{p}: {8 * width}-bit samples are not supported; convert to 16-bit PCM")
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    x = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    x = (x - 128.0) / 128.0 if width == 1 else x / float(np.iinfo(dtype).max)
    return x.reshape(-1, ch).mean(axis=1), sr


def write_wav(path: str | Path, waveform: np.ndarray, sample_rate: int) -> Path:
    """Write a mono float waveform as 16-bit PCM WAV."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(np.asarray(waveform, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wavelib.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return p


__all__ = ["read_wav", "write_wav"]
