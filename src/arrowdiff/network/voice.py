"""The voice model: how a voice sounds and how it paces speech, beside the score network (R3.4).

- ``SpeakerEncoder``: reference log-mel (any length) -> one unit-norm speaker embedding. Convolutions
  and attentive statistics pooling (Okabe et al. 2018), trained end to end through the TTS loss with the
  reference taken from a *different* utterance of the same speaker, so it keeps the voice and drops the
  words (the reference-encoder recipe of zero-shot TTS, Jia et al. 2018; Casanova et al. 2022, YourTTS).
  It is the project's own encoder: the evaluation's speaker model (resemblyzer GE2E) never trains it.
- ``DurationPredictor``: phones + speaker -> frames per phone (log(1 + d) regression, FastSpeech 2, Ren
  et al. 2021), so text alone fixes the length and alignment of the mel to sample.
- a table of built-in voices (``voice_id``): the mean training embedding of each training speaker.

Like the VAE it is a codec-side component: it is not counted in the score network's parameters (R4.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arrowdiff.config import AudioHeadConfig, VoiceConfig
from arrowdiff.errors import ConfigError

MIN_REFERENCE_FRAMES = 32  # 0.5 s


class _ConvBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=dilation * (kernel // 2), dilation=dilation)
        self.norm = nn.GroupNorm(1, channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop(F.gelu(self.norm(self.conv(x))))


class SpeakerEncoder(nn.Module):
    """(B, n_mels, R) normalised log-mel + optional (B, R) mask -> (B, E) unit-norm embeddings."""

    def __init__(self, n_mels: int, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.inp = nn.Conv1d(n_mels, channels, 5, padding=2)
        self.blocks = nn.Sequential(*(_ConvBlock(channels, 5, d) for d in (1, 2, 4)))
        self.attn = nn.Conv1d(channels, 1, 1)
        self.out = nn.Linear(2 * channels, embed_dim)

    def forward(self, mel: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.blocks(F.gelu(self.inp(mel)))  # (B, C, R)
        logits = self.attn(h).squeeze(1).float()  # (B, R)
        if mask is not None:
            logits = logits.masked_fill(~mask.bool(), float("-inf"))
        w = torch.softmax(logits, dim=-1).to(h.dtype)[:, None, :]
        mean = (h * w).sum(-1)
        std = ((h * h * w).sum(-1) - mean * mean).clamp_min(1e-5).sqrt()
        return F.normalize(self.out(torch.cat([mean, std], -1)).float(), dim=-1)


class DurationPredictor(nn.Module):
    """Phones (B, P) + speaker (B, E) -> log(1 + frames) per phone (B, P)."""

    def __init__(self, num_phones: int, embed_dim: int, channels: int) -> None:
        super().__init__()
        self.phone = nn.Embedding(num_phones, channels)
        self.speaker = nn.Linear(embed_dim, channels)
        self.blocks = nn.Sequential(*(_ConvBlock(channels, 3, 1, dropout=0.1) for _ in range(3)))
        self.out = nn.Linear(channels, 1)

    def forward(self, phones: Tensor, speaker: Tensor) -> Tensor:
        x = self.phone(phones.long()) + self.speaker(speaker)[:, None, :]
        return self.out(self.blocks(x.transpose(1, 2)).transpose(1, 2)).squeeze(-1)


class VoiceModel(nn.Module):
    def __init__(self, cfg: VoiceConfig, audio: AudioHeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SpeakerEncoder(audio.n_mels, cfg.channels, cfg.embed_dim)
        self.durations = DurationPredictor(audio.num_phones, cfg.embed_dim, cfg.duration_channels)
        self.register_buffer("voice_table", torch.zeros(len(cfg.voices), cfg.embed_dim))

    def embed_reference(self, mel: Tensor, mask: Tensor | None = None) -> Tensor:
        """Normalised reference mel (B, n_mels, R) -> speaker embeddings (B, E)."""
        if mel.dim() != 3 or mel.shape[-1] < MIN_REFERENCE_FRAMES:
            raise ConfigError(
                f"reference mel of shape {tuple(mel.shape)}: need (B, n_mels, R) with R >= "
                f"{MIN_REFERENCE_FRAMES} frames (0.5 s)"
            )
        return self.encoder(mel, mask)

    def voice(self, voice_id: str) -> Tensor:
        """The built-in voice ``voice_id`` as a (1, E) embedding."""
        if voice_id not in self.cfg.voices:
            known = ", ".join(self.cfg.voices) or "none: this model has no built-in voices"
            raise ConfigError(f"unknown voice_id {voice_id!r}: built-in voices are {known}")
        return self.voice_table[self.cfg.voices.index(voice_id)][None]

    def set_voices(self, names: list[str], table: Tensor) -> None:
        """Replace the built-in voices (names and their (V, E) embeddings)."""
        if table.shape != (len(names), self.cfg.embed_dim):
            raise ConfigError(
                f"voice table {tuple(table.shape)} must be ({len(names)}, {self.cfg.embed_dim})"
            )
        self.voice_table = table.detach().to(self.voice_table.device, self.voice_table.dtype).clone()
        self.cfg = VoiceConfig(**{**self.cfg.__dict__, "voices": tuple(names)})

    def predict_durations(self, phones: Tensor, speaker: Tensor, pace: float = 1.0) -> Tensor:
        """Integer frames per phone (B, P), at least 1 each; ``pace`` > 1 speaks slower."""
        log_d = self.durations(phones, speaker)
        return torch.clamp(torch.round((torch.expm1(log_d.float()).clamp_min(0)) * pace), min=1).long()


__all__ = ["DurationPredictor", "MIN_REFERENCE_FRAMES", "SpeakerEncoder", "VoiceModel"]
