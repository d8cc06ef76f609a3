"""Log-mel spectrogram: the audio representation every speech part shares (R3.2).

16 kHz mono, 1024-point STFT, hop 256 (62.5 frames per second), 80 mel bands from 0 to 8 kHz (Slaney
scale and area normalisation, as in HiFi-GAN and Vocos), natural log of the magnitude clamped at 1e-5.
One definition here feeds the data builder, the vocoder, the audio head and the evaluation, so a mel made
anywhere decodes everywhere.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from arrowdiff.errors import ConfigError

LOG_FLOOR = math.log(1e-5)
UINT8_RANGE = (-11.5, 2.5)  # storage range of quantised log-mels (data shards on disk)


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16_000
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8_000.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop

    def num_frames(self, num_samples: int) -> int:
        """Frames a centred STFT makes of ``num_samples`` samples."""
        return num_samples // self.hop + 1


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (Slaney 1998, librosa's default)."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((m - 15.0) * (math.log(6.4) / 27.0))
    return np.where(m >= 15.0, log, lin)


@lru_cache(maxsize=8)
def mel_filterbank(cfg: MelConfig) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters with Slaney area normalisation."""
    freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.f_min), _hz_to_mel(cfg.f_max), cfg.n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb.astype(np.float32)


@lru_cache(maxsize=16)
def _filterbank_tensor(cfg: MelConfig, device: torch.device) -> Tensor:
    """The filterbank on ``device``, made once: a host-to-device copy per call would stall the GPU."""
    with torch.inference_mode(False):  # a normal tensor, usable by autograd later
        return torch.from_numpy(mel_filterbank(cfg)).to(device)


def log_mel(wave: Tensor | np.ndarray, cfg: MelConfig = MelConfig()) -> Tensor:
    """Waveform (..., N) float in [-1, 1] at ``cfg.sample_rate`` -> log-mel (..., n_mels, N // hop + 1)."""
    x = torch.as_tensor(wave, dtype=torch.float32)
    if x.shape[-1] < cfg.n_fft // 2 + 1:
        raise ConfigError(
            f"waveform of {x.shape[-1]} samples is too short for a mel spectrogram: need at least "
            f"{cfg.n_fft // 2 + 1} samples ({(cfg.n_fft // 2 + 1) / cfg.sample_rate:.3f} s)"
        )
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    window = torch.hann_window(cfg.n_fft, device=x.device)
    spec = torch.stft(x, cfg.n_fft, cfg.hop, window=window, center=True, return_complex=True).abs()
    fb = _filterbank_tensor(cfg, x.device)
    mel = torch.log(torch.clamp(fb @ spec, min=1e-5))
    return mel.reshape(*lead, cfg.n_mels, mel.shape[-1])


def quantize_mel(mel: Tensor | np.ndarray) -> np.ndarray:
    """Log-mel -> uint8 codes over ``UINT8_RANGE`` (step 0.055 nats: far below what the models resolve)."""
    lo, hi = UINT8_RANGE
    m = np.asarray(mel, dtype=np.float32)
    return np.clip(np.rint((m - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


def dequantize_mel(codes: np.ndarray | Tensor) -> Tensor:
    """uint8 codes -> float32 log-mel (a tensor stays on its device)."""
    lo, hi = UINT8_RANGE
    x = codes if isinstance(codes, Tensor) else torch.from_numpy(np.asarray(codes))
    return x.float() / 255.0 * (hi - lo) + lo


__all__ = ["MelConfig", "log_mel", "mel_filterbank", "quantize_mel", "dequantize_mel", "LOG_FLOOR"]
