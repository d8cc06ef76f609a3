"""Voice matching for zero-shot cloning: the reference's per-bin log-mel statistics (AdaIN).

Adaptive instance normalisation (Huang & Belongie 2017, "Arbitrary Style Transfer in Real-time with
Adaptive Instance Normalization") carries a style as the channel-wise mean and standard deviation of a
feature map; AdaIN-VC (Chou, Yeh & Lee 2019, "One-shot Voice Conversion by Separating Speaker and Content
Representations with Instance Normalization") showed that for speech these channel statistics hold much of
the speaker while the normalised frames hold the content. Here the channels are the log-mel bins: the
generated mel's per-bin mean and standard deviation over its active frames are replaced by those of the
reference audio. That moves the long-term spectral envelope (formant region, spectral tilt, brightness)
of the reference voice into the cloned speech, while every frame-to-frame change (the words) stays the
model's. ``strength`` blends between the model's mel (0) and the fully matched one (1).

It needs no training and no speaker model: the statistics come from the same 5 s of reference audio the
reference encoder reads. ``benchmarks/tts_quality.py`` measures cloning with and without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from arrowdiff.errors import ConfigError
from arrowdiff.speech.mel import LOG_FLOOR

ACTIVE_RANGE = (0.05, 0.95)  # frame-energy quantiles whose midpoint separates speech from pauses
MIN_ACTIVE_FRAMES = 8
MIN_STD = 0.1  # a flatter bin (nats) is not scaled up as if it carried a voice's variation
MAX_SCALE = 1.5  # per-bin std ratio bound: larger ratios cost voicing and words (chosen on val, README)


@dataclass(frozen=True)
class MelStatistics:
    """Per-bin mean and standard deviation (n_mels,) of a log-mel over its active frames."""

    mean: Tensor
    std: Tensor
    frames: int


def active_frames(mel: Tensor) -> Tensor:
    """(F,) bool: frames whose mean log-mel is at or above the midpoint between the quiet and the loud
    end of the mel's frame energies (:data:`ACTIVE_RANGE` quantiles): speech, not pauses, which would
    pull every bin's mean towards the silence floor."""
    energy = mel.float().mean(0)
    lo, hi = torch.quantile(energy, torch.tensor(ACTIVE_RANGE, device=energy.device))
    return energy >= (lo + hi) / 2


def mel_statistics(mel: Tensor, min_frames: int = MIN_ACTIVE_FRAMES) -> MelStatistics:
    """Statistics of a log-mel (n_mels, F) over its active frames (at least ``min_frames`` of them)."""
    if mel.dim() != 2:
        raise ConfigError(f"mel of shape {tuple(mel.shape)}: expected (n_mels, frames)")
    mask = active_frames(mel)
    n = int(mask.sum())
    if n < min_frames:
        raise ConfigError(
            f"only {n} active frames in a mel of {mel.shape[1]}: voice matching needs at least "
            f"{min_frames}; pass longer speech (5 s recommended)"
        )
    active = mel.float()[:, mask]
    return MelStatistics(active.mean(1), active.std(1), n)


def match_statistics(mel: Tensor, target: MelStatistics, strength: float = 1.0) -> Tensor:
    """``mel`` (n_mels, F) with its per-bin active-frame statistics moved to ``target``'s (AdaIN), blended
    with the input by ``strength`` in [0, 1].

    Every frame gets its bin's affine map; the std ratio is bounded (:data:`MIN_STD`, :data:`MAX_SCALE`)
    and the result clamped at the log floor, so pauses stay silence. A mel too short to have
    :data:`MIN_ACTIVE_FRAMES` active frames is measured over all its frames."""
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"voice_match={strength} must be in [0, 1] (0 = off, 1 = full matching)")
    if mel.shape[0] != target.mean.shape[0]:
        raise ConfigError(f"mel has {mel.shape[0]} bins, the reference statistics {target.mean.shape[0]}")
    if strength == 0.0 or mel.shape[1] < 2:  # nothing to match, or no variation to measure
        return mel
    x = mel.float()
    mask = active_frames(x)
    if int(mask.sum()) < MIN_ACTIVE_FRAMES:  # a very short output (a word): measured over every frame
        mask = torch.ones_like(mask)
    own = MelStatistics(x[:, mask].mean(1), x[:, mask].std(1), int(mask.sum()))
    scale = (target.std / own.std.clamp(min=MIN_STD)).clamp(1.0 / MAX_SCALE, MAX_SCALE)
    matched = ((x - own.mean[:, None]) * scale[:, None] + target.mean[:, None]).clamp(min=LOG_FLOOR)
    return ((1.0 - strength) * x + strength * matched).to(mel.dtype)


__all__ = ["MelStatistics", "active_frames", "match_statistics", "mel_statistics"]
