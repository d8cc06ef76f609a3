"""The mel prior: a coarse log-mel from phones, durations and a speaker, where speech diffusion starts.

Shallow diffusion (DiffSinger, Liu et al. 2022, section 3.3): an auxiliary decoder trained with a simple
L1 loss gives a blurry but aligned mel ``m``; instead of sampling from pure noise at t = 1, the sampler
starts at an intermediate time k from ``x_k = (1 - k) m + k eps`` (our flow path), where the noised
prior and the noised real mel are already close, and the score network adds the detail on the way to
t = 0. Grad-TTS (Popov et al. 2021) uses the same kind of text-aligned mean as its prior.

Architecture (FastSpeech 2, Ren et al. 2021, convolutional for CPU speed): a phone encoder (embedding +
speaker + dilated residual convolutions over the phone sequence), a length regulator that copies each
phone's vector to its frames together with the frame's relative position inside the phone, and a
decoder of dilated residual convolutions at the backbone's token rate (``frames_per_token`` mel frames
per step) that predicts the normalised log-mel. It lives beside the score network like the vocoder
(component ``prior``) and is not counted in its parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arrowdiff.errors import ConfigError


@dataclass(frozen=True)
class MelPriorConfig:
    n_mels: int = 80
    num_phones: int = 64
    embed_dim: int = 192  # speaker embedding width (the voice model's)
    frames_per_token: int = 2  # decoder step: this many mel frames
    channels: int = 256
    encoder_layers: int = 4
    decoder_layers: int = 6
    kernel: int = 5

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"MelPriorConfig.{name}={value!r} must be an integer >= 1")
        if self.kernel % 2 == 0:
            raise ConfigError(f"MelPriorConfig.kernel={self.kernel} must be odd")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MelPriorConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown MelPriorConfig keys {unknown}")
        return cls(**d)


class _Residual(nn.Module):
    """(x + dropout(GELU(LayerNorm(conv(x))))) * mask; the norm is per time step, over channels, so
    padding never changes the real positions."""

    def __init__(self, channels: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=dilation * (kernel // 2), dilation=dilation)
        self.norm = nn.LayerNorm(channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.norm(self.conv(x).transpose(1, 2)).transpose(1, 2)
        return (x + self.drop(F.gelu(h))) * mask


def regulate(durations: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
    """Length regulator indices: for durations (B, P) -> (phone index of each frame (B, F), relative
    position of the frame inside its phone in [0, 1) (B, F)); frames past the end point at the last
    phone that has frames, with position 1."""
    B, P = durations.shape
    d = durations.long().clamp_min(0)
    ends = d.cumsum(1)  # (B, P)
    frames = torch.arange(num_frames, device=d.device)[None, :].expand(B, -1)
    real = (d > 0).long()
    last = (P - 1 - real.flip(1).argmax(1))[:, None]  # the last phone with frames
    idx = torch.minimum(torch.searchsorted(ends, frames.contiguous(), right=True), last)
    start = ends.gather(1, idx) - d.gather(1, idx)
    pos = (frames - start).float() / d.gather(1, idx).clamp_min(1).float()
    past = frames >= ends[:, -1:]
    return idx, torch.where(past, torch.ones_like(pos), pos.clamp(0, 1))


class MelPrior(nn.Module):
    """Phones (B, P) + durations (B, P) + speaker (B, E) -> normalised log-mel (B, F, n_mels)."""

    def __init__(self, cfg: MelPriorConfig, dropout: float = 0.1) -> None:
        super().__init__()
        self.cfg = cfg
        C, k = cfg.channels, cfg.frames_per_token
        self.phone = nn.Embedding(cfg.num_phones, C)
        self.speaker = nn.Linear(cfg.embed_dim, C)
        self.encoder = nn.ModuleList(_Residual(C, cfg.kernel, 1, dropout) for _ in range(cfg.encoder_layers))
        self.position = nn.Linear(2 * k, C)  # position of the token's k frames in their phones (+ sine)
        self.token = nn.Linear(k * C, C)  # the k frames' phone vectors -> one decoder step
        self.dec_speaker = nn.Linear(cfg.embed_dim, C)
        dilations = [2 ** (i % 3) for i in range(cfg.decoder_layers)]
        self.decoder = nn.ModuleList(_Residual(C, cfg.kernel, d, dropout) for d in dilations)
        self.out = nn.Linear(C, k * cfg.n_mels)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, phones: Tensor, durations: Tensor, speaker: Tensor, num_frames: int) -> Tensor:
        cfg = self.cfg
        k = cfg.frames_per_token
        if phones.shape != durations.shape or phones.dim() != 2:
            raise ConfigError(
                f"phones {tuple(phones.shape)} and durations {tuple(durations.shape)} must both be (B, P)"
            )
        if speaker.shape != (phones.shape[0], cfg.embed_dim):
            raise ConfigError(
                f"speaker of shape {tuple(speaker.shape)}: expected ({phones.shape[0]}, {cfg.embed_dim})"
            )
        if num_frames % k:
            raise ConfigError(f"num_frames={num_frames} must be a multiple of frames_per_token={k}")
        B, P = phones.shape
        pmask = (durations > 0).float()[:, None, :]  # (B, 1, P): padding phones have zero frames
        h = (self.phone(phones.long()) + self.speaker(speaker)[:, None, :]).transpose(1, 2) * pmask
        for layer in self.encoder:
            h = layer(h, pmask)
        idx, pos = regulate(durations, num_frames)  # (B, F)
        frames = h.transpose(1, 2).gather(1, idx[..., None].expand(-1, -1, h.shape[1]))  # (B, F, C)
        N = num_frames // k
        x = self.token(frames.reshape(B, N, k * frames.shape[-1]))
        pos = pos.reshape(B, N, k)
        x = x + self.position(torch.cat([pos, torch.sin(torch.pi * pos)], -1))
        x = (x + self.dec_speaker(speaker)[:, None, :]).transpose(1, 2)  # (B, C, N)
        ones = x.new_ones(B, 1, N)
        for layer in self.decoder:
            x = layer(x, ones)
        return self.out(x.transpose(1, 2)).reshape(B, num_frames, cfg.n_mels)


__all__ = ["MelPrior", "MelPriorConfig", "regulate"]
