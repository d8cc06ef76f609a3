"""The no-training baseline vocoder: log-mel -> linear magnitude (NNLS) -> fast Griffin-Lim -> waveform.

1. Magnitude. The mel is ``log(max(fb @ |S|, 1e-5))``, so ``fb @ |S| = exp(mel)``: the smallest
   non-negative ``|S|`` that fits is a non-negative least squares problem per frame (as librosa's
   ``mel_to_stft``). It starts from the pseudo-inverse of the filterbank, clamped at 0, and takes
   projected gradient steps (step 1 / the largest eigenvalue of fb^T fb, so each step decreases the
   squared error and stays feasible).
2. Phase. Fast Griffin-Lim (Perraudin, Balazs and Sondergaard 2013, "A fast Griffin-Lim algorithm"):
   alternate projections between consistent spectrograms (stft of an istft) and the target magnitude
   (Griffin and Lim 1984) with the momentum step ``c_n = t_n + a (t_n - t_{n-1})``, a = 0.99. Only the
   phase of ``c_n`` is kept, so it is computed as ``t_n - a / (1 + a) t_{n-1}`` (librosa's form).

The output has the vocoder's length, ``hop * (F - 1)`` samples for F frames.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from arrowdiff.errors import ConfigError
from arrowdiff.speech.mel import MelConfig, mel_filterbank

DEFAULT_MEL = MelConfig()


def mel_to_magnitude(mel: Tensor | np.ndarray, cfg: MelConfig = DEFAULT_MEL, iters: int = 100) -> Tensor:
    """Log-mel (..., n_mels, F) -> non-negative linear STFT magnitude (..., n_fft // 2 + 1, F), float32."""
    m = torch.as_tensor(mel, dtype=torch.float32)
    if m.dim() < 2 or m.shape[-2] != cfg.n_mels:
        raise ConfigError(f"mel must be (..., {cfg.n_mels}, F), got {tuple(m.shape)}")
    fb64 = torch.from_numpy(mel_filterbank(cfg)).double()
    fb = fb64.float().to(m.device)
    pinv = torch.linalg.pinv(fb64).float().to(m.device)
    step = 1.0 / float(torch.linalg.matrix_norm(fb64, ord=2) ** 2)
    target = torch.exp(m)
    mag = torch.clamp(pinv @ target, min=0.0)
    for _ in range(iters):  # projected gradient descent on 0.5 ||fb mag - target||^2, mag >= 0
        mag = torch.clamp(mag - step * (fb.T @ (fb @ mag - target)), min=0.0)
    return mag


def griffin_lim(
    mel: Tensor | np.ndarray,
    cfg: MelConfig = DEFAULT_MEL,
    n_iter: int = 32,
    momentum: float = 0.99,
    seed: int = 0,
) -> Tensor:
    """Log-mel (..., n_mels, F) -> waveform (..., hop * (F - 1)) float32, on the mel's device.

    ``n_iter = 0`` gives the random-phase reconstruction (the starting point). Phases start from a
    generator seeded with ``seed``, so the result is deterministic.
    """
    if n_iter < 0 or not 0.0 <= momentum < 1.0:
        raise ConfigError(f"n_iter={n_iter} must be >= 0 and momentum={momentum} in [0, 1) (default 0.99)")
    mag = mel_to_magnitude(mel, cfg)
    lead, (bins, frames) = mag.shape[:-2], mag.shape[-2:]
    mag = mag.reshape(-1, bins, frames)
    length = cfg.hop * (frames - 1)
    window = torch.hann_window(cfg.n_fft, device=mag.device)

    def istft(spec: Tensor) -> Tensor:
        return torch.istft(spec, cfg.n_fft, cfg.hop, cfg.n_fft, window, center=True, length=length)

    gen = torch.Generator().manual_seed(seed)
    angles = torch.polar(torch.ones(()), 2 * torch.pi * torch.rand(mag.shape, generator=gen)).to(mag.device)
    prev = torch.zeros_like(angles)
    alpha = momentum / (1.0 + momentum)
    for _ in range(n_iter):
        rebuilt = torch.stft(istft(mag * angles), cfg.n_fft, cfg.hop, cfg.n_fft, window, return_complex=True)
        angles = rebuilt - alpha * prev
        angles = angles / (angles.abs() + 1e-16)
        prev = rebuilt
    return istft(mag * angles).reshape(*lead, length)


__all__ = ["griffin_lim", "mel_to_magnitude"]
