"""The vocoder's training objective: mel L1 + multi-resolution STFT loss, and an optional adversarial part.

* Mel L1: mean |log-mel(pred) - log-mel(target)| on the project's mel, weight 45 as in HiFi-GAN (Kong et al.
  2020, "HiFi-GAN: Generative Adversarial Networks for Efficient and High Fidelity Speech Synthesis") and
  Vocos (Siuzdak 2023).
* Multi-resolution STFT loss (Yamamoto, Song and Kim 2020, "Parallel WaveGAN", eqs. 1-3): at each of three
  (n_fft, hop, window) settings, spectral convergence ||S - S_hat||_F / ||S||_F plus the L1 distance of
  log magnitudes, averaged over the resolutions. It looks at finer and coarser time-frequency grids than
  the mel, which constrains the phase the vocoder predicts.
* Adversarial (off unless training asks for it): the hinge loss (Lim and Ye 2017, "Geometric GAN"; as in
  Vocos) and feature matching (Larsen et al. 2016; HiFi-GAN's L_FM) on the multi-resolution discriminator
  of :mod:`arrowdiff.speech.discriminator`.

All terms are computed in float32 with autocast off, so a bf16 training run scores in full precision.
Stats are returned as detached tensors (no device sync per step); call ``float()`` when logging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from arrowdiff.errors import ConfigError
from arrowdiff.speech.mel import MelConfig, log_mel

DEFAULT_MEL = MelConfig()

# (n_fft, hop, window) of Parallel WaveGAN's auxiliary loss (Yamamoto et al. 2020, section 4.1)
STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))


@dataclass(frozen=True)
class VocoderLossWeights:
    """Weights of the loss terms (the adversarial pair only counts once the GAN is switched on)."""

    mel: float = 45.0  # HiFi-GAN / Vocos lambda_mel
    stft: float = 2.5  # (spectral convergence + log-magnitude L1), mean over STFT_RESOLUTIONS
    adv: float = 1.0  # generator hinge loss, mean over discriminators
    fm: float = 2.0  # feature matching, mean over discriminators (HiFi-GAN's lambda_fm)

    def __post_init__(self) -> None:
        for name in ("mel", "stft", "adv", "fm"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss weight {name}={getattr(self, name)} must be >= 0")
        if self.mel == self.stft == 0:
            raise ConfigError("at least one of the mel and stft loss weights must be > 0")


def stft_magnitude(wave: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    """|STFT| (B, n_fft // 2 + 1, T) of (B, N) waves, floored at sqrt(1e-7) (as Parallel WaveGAN)."""
    window = torch.hann_window(win, device=wave.device)
    spec = torch.stft(wave, n_fft, hop, win, window, center=True, return_complex=True)
    return torch.sqrt(torch.clamp(spec.real.square() + spec.imag.square(), min=1e-7))


def multi_resolution_stft_loss(
    pred: Tensor, target: Tensor, resolutions: Sequence[tuple[int, int, int]] = STFT_RESOLUTIONS
) -> tuple[Tensor, Tensor]:
    """(spectral convergence, log-magnitude L1), each the mean over ``resolutions``, of (B, N) waves."""
    with torch.autocast(pred.device.type, enabled=False):
        pred, target = pred.float(), target.float()
        sc, mag = pred.new_zeros(()), pred.new_zeros(())
        for n_fft, hop, win in resolutions:
            p, t = stft_magnitude(pred, n_fft, hop, win), stft_magnitude(target, n_fft, hop, win)
            sc = sc + torch.linalg.vector_norm(t - p) / torch.linalg.vector_norm(t)
            mag = mag + (torch.log(t) - torch.log(p)).abs().mean()
        return sc / len(resolutions), mag / len(resolutions)


def mel_l1(pred: Tensor, target_mel: Tensor, cfg: MelConfig = DEFAULT_MEL) -> Tensor:
    """Mean |log-mel(pred) - target_mel| of waves (B, N) and the target log-mel (B, n_mels, N // hop + 1)."""
    with torch.autocast(pred.device.type, enabled=False):
        return (log_mel(pred.float(), cfg) - target_mel.float()).abs().mean()


def reconstruction_loss(
    pred: Tensor,
    target: Tensor,
    weights: VocoderLossWeights = VocoderLossWeights(),
    cfg: MelConfig = DEFAULT_MEL,
    target_mel: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``mel * mel L1 + stft * (SC + log-mag L1)`` of waves (B, N), and its terms (detached tensors).

    Zero when ``pred`` equals ``target``. Pass ``target_mel`` when it is already computed (the vocoder's
    input), to save one mel.
    """
    if pred.shape != target.shape:
        raise ConfigError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} waves must match")
    if target_mel is None:
        with torch.no_grad(), torch.autocast(target.device.type, enabled=False):
            target_mel = log_mel(target.float(), cfg)
    mel = mel_l1(pred, target_mel, cfg)
    sc, mag = multi_resolution_stft_loss(pred, target) if weights.stft else (mel * 0, mel * 0)
    loss = weights.mel * mel + weights.stft * (sc + mag)
    return loss, {"mel_l1": mel.detach(), "stft_sc": sc.detach(), "stft_mag": mag.detach()}


def discriminator_hinge_loss(real: Sequence[Tensor], fake: Sequence[Tensor]) -> Tensor:
    """Mean over discriminators of mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    terms = [
        torch.relu(1 - r.float()).mean() + torch.relu(1 + f.float()).mean()
        for r, f in zip(real, fake, strict=True)
    ]
    return torch.stack(terms).mean()


def generator_hinge_loss(fake: Sequence[Tensor]) -> Tensor:
    """Mean over discriminators of mean(relu(1 - D(fake))) (Vocos's generator loss)."""
    return torch.stack([torch.relu(1 - f.float()).mean() for f in fake]).mean()


def feature_matching_loss(real: Sequence[Sequence[Tensor]], fake: Sequence[Sequence[Tensor]]) -> Tensor:
    """Mean over discriminators of the summed per-layer mean |f_real - f_fake| (real features detached)."""
    per_disc = [
        sum((r.detach().float() - f.float()).abs().mean() for r, f in zip(rs, fs, strict=True))
        for rs, fs in zip(real, fake, strict=True)
    ]
    return torch.stack([torch.as_tensor(t) for t in per_disc]).mean()


__all__ = [
    "STFT_RESOLUTIONS",
    "VocoderLossWeights",
    "discriminator_hinge_loss",
    "feature_matching_loss",
    "generator_hinge_loss",
    "mel_l1",
    "multi_resolution_stft_loss",
    "reconstruction_loss",
    "stft_magnitude",
]
