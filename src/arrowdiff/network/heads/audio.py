"""Audio head: normalised log-mel frames with their phones in, velocity out (R3.1, R4.7).

Each backbone token carries ``k`` consecutive mel frames (one linear layer over the k x 80 values) plus
the phones aligned to those frames (one learned vector per frame slot, concatenated to the token width):
the text reaches the shared backbone already aligned in time, as in FastSpeech 2 (Ren et al. 2021) and
Grad-TTS (Popov et al. 2021), and the backbone's bidirectional attention contextualises both. Positions
come from the backbone's RoPE, so any length works. The output layer starts at zero (DiT).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from arrowdiff.config import AudioHeadConfig
from arrowdiff.errors import ConfigError
from arrowdiff.network.heads.base import Head, register_head
from arrowdiff.network.layers import zero_init


class AudioHead(Head):
    modality = "audio"

    def __init__(self, cfg: AudioHeadConfig, dim: int) -> None:
        super().__init__()
        k = cfg.frames_per_token
        if dim % k:
            raise ConfigError(f"backbone width {dim} must be divisible by frames_per_token={k}")
        self.cfg = cfg
        self.inp = nn.Linear(cfg.n_mels * k, dim)
        self.phone = nn.Embedding(cfg.num_phones, dim // k)
        nn.init.normal_(self.phone.weight, std=0.02)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.out = nn.Linear(dim, cfg.n_mels * k)
        zero_init(self.out)

    def check(self, x: Tensor, phones: Tensor) -> None:
        k, m = self.cfg.frames_per_token, self.cfg.n_mels
        if x.dim() != 3 or x.shape[2] != m or x.shape[1] % k:
            raise ConfigError(
                f"mel batch of shape {tuple(x.shape)}: expected (B, F, {m}) with F a multiple of {k}"
            )
        if phones.shape != x.shape[:2]:
            raise ConfigError(
                f"phones of shape {tuple(phones.shape)} must be one id per frame {tuple(x.shape[:2])}"
            )
        if phones.numel() and (int(phones.min()) < 0 or int(phones.max()) >= self.cfg.num_phones):
            raise ConfigError(f"phone ids must lie in [0, {self.cfg.num_phones})")

    def embed(self, x: Tensor, phones: Tensor) -> Tensor:
        """Mel (B, F, n_mels) normalised + phones (B, F) ids -> tokens (B, F / k, D)."""
        self.check(x, phones)
        B, F, M = x.shape
        k = self.cfg.frames_per_token
        tok = self.inp(x.to(self.inp.weight.dtype).reshape(B, F // k, M * k))
        return tok + self.phone(phones.long()).reshape(B, F // k, -1).to(tok.dtype)

    def project(self, h: Tensor) -> Tensor:
        """Tokens (B, F / k, D) -> velocity (B, F, n_mels)."""
        B, N, _ = h.shape
        return self.out(self.norm(h)).reshape(B, N * self.cfg.frames_per_token, self.cfg.n_mels)

    def normalize(self, log_mel: Tensor) -> Tensor:
        return (log_mel - self.cfg.mel_mean) / self.cfg.mel_std

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.cfg.mel_std + self.cfg.mel_mean


@register_head("audio")
def build_audio_head(cfg: AudioHeadConfig, dim: int, shared: Head | None = None) -> AudioHead:
    return AudioHead(cfg, dim)


def frame_phones(phones: Tensor, durations: Tensor, num_frames: int | None = None) -> Tensor:
    """Expand phone ids (P,) by integer durations (P,) into one id per frame (length regulator,
    FastSpeech), padded or cut to ``num_frames`` with the last phone (silence at the end)."""
    ids = torch.repeat_interleave(phones.long(), durations.long().clamp_min(0))
    if num_frames is None:
        return ids
    if len(ids) >= num_frames:
        return ids[:num_frames]
    fill = ids[-1:] if len(ids) else phones.new_zeros(1, dtype=torch.long)
    return torch.cat([ids, fill.expand(num_frames - len(ids))])


__all__ = ["AudioHead", "frame_phones"]
