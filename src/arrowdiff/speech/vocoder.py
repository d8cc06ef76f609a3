"""The neural vocoder: log-mel (B, 80, F) -> 16 kHz waveform (B, 256 * (F - 1)), after Vocos.

Siuzdak 2023, "Vocos: Closing the gap between time-domain and Fourier-based neural vocoders": instead of
upsampling to the sample rate with transposed convolutions (HiFi-GAN), a ConvNeXt stack (Liu et al. 2022,
"A ConvNet for the 2020s") runs at the frame rate and predicts one STFT frame per mel frame; an inverse
STFT makes the waveform. Everything heavy happens at 62.5 frames per second, so it is fast on a CPU.

    mel (B, 80, F) -> Conv1d(80 -> dim, k7) -> LayerNorm
      -> layers x ConvNeXt block (depthwise conv k7, LayerNorm, Linear dim -> intermediate, GELU,
                                  Linear intermediate -> dim, layer scale, residual)
      -> LayerNorm -> Linear(dim -> n_fft + 2) = [log-magnitude | phase], n_fft/2 + 1 bins each
      -> S = min(exp(log-magnitude), 1e2) * (cos(phase) + i sin(phase))
      -> istft(S, n_fft 1024, hop 256, Hann window 1024, centred) -> wave (B, 256 * (F - 1))

The default (dim 384, 8 layers, intermediate 1152) has 7,735,938 parameters (Vocos's 24 kHz mel model:
dim 512, 8 layers, 13.5 M). The mel it reads is the one of :mod:`arrowdiff.speech.mel`, and the STFT
grid of its head (hop 256 centred frames) is the grid of that mel, so frame ``f`` of the input sets the
samples around ``256 * f`` of the output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from arrowdiff.errors import ConfigError
from arrowdiff.speech.mel import MelConfig

MAX_MAGNITUDE = 1e2  # Vocos's clamp on exp(log-magnitude): keeps early training from blowing up


@dataclass(frozen=True)
class VocoderConfig:
    """Shape of the vocoder. ``n_mels``, ``hop`` and ``sample_rate`` must match the mel it decodes."""

    n_mels: int = 80
    dim: int = 384  # ConvNeXt width
    intermediate: int = 1152  # pointwise hidden width (3 x dim, as in Vocos)
    layers: int = 8  # ConvNeXt blocks
    n_fft: int = 1024  # inverse STFT size of the head (Hann window of the same length)
    hop: int = 256  # samples per mel frame
    sample_rate: int = 16_000

    def __post_init__(self) -> None:
        for name in ("n_mels", "dim", "intermediate", "layers", "hop", "sample_rate"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"VocoderConfig.{name}={getattr(self, name)} must be >= 1")
        if self.n_fft < 2 * self.hop or self.n_fft % 2:
            raise ConfigError(
                f"n_fft={self.n_fft} must be even and >= 2 * hop={2 * self.hop} (Hann overlap-add needs "
                "at least 50% overlap); the default is n_fft 1024 with hop 256"
            )

    @property
    def bins(self) -> int:
        """Frequency bins the head predicts (n_fft // 2 + 1)."""
        return self.n_fft // 2 + 1

    def mel_config(self) -> MelConfig:
        """The log-mel this vocoder decodes (the project's one mel, with this config's sizes)."""
        return MelConfig(sample_rate=self.sample_rate, hop=self.hop, n_mels=self.n_mels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in metadata.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VocoderConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"unknown VocoderConfig keys {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**d)


def tiny_vocoder_config() -> VocoderConfig:
    """A width-16, one-block config for tests."""
    return VocoderConfig(dim=16, intermediate=32, layers=1)


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block on (B, dim, F): depthwise k7 conv, LayerNorm, MLP with GELU, layer scale."""

    def __init__(self, dim: int, intermediate: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        h = self.dwconv(x).transpose(1, 2)
        h = self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class Vocoder(nn.Module):
    """Vocos-style vocoder; ``forward(mel (B, n_mels, F)) -> wave (B, hop * (F - 1))`` in float32."""

    def __init__(self, cfg: VocoderConfig = VocoderConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Conv1d(cfg.n_mels, cfg.dim, 7, padding=3)
        self.embed_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.intermediate, 1.0 / cfg.layers) for _ in range(cfg.layers)
        )
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.n_fft + 2)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.apply(_init_weights)

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters())

    def check_mel(self, mel: Tensor) -> None:
        """Raise ConfigError unless ``mel`` is (B, n_mels, F) with F >= 2."""
        if mel.dim() != 3 or mel.shape[1] != self.cfg.n_mels or mel.shape[2] < 2:
            raise ConfigError(
                f"mel must be (B, {self.cfg.n_mels}, F) with F >= 2 frames, got {tuple(mel.shape)}; make it "
                "with arrowdiff.speech.mel.log_mel"
            )

    def spectrum(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        """The head's (log-magnitude, phase), each (B, n_fft // 2 + 1, F), in float32."""
        self.check_mel(mel)
        h = self.embed_norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h)
        out = self.head(self.final_norm(h.transpose(1, 2))).transpose(1, 2).float()
        return out[:, : self.cfg.bins], out[:, self.cfg.bins :]

    def forward(self, mel: Tensor) -> Tensor:
        log_mag, phase = self.spectrum(mel)
        with torch.autocast(mel.device.type, enabled=False):  # the inverse STFT runs in float32
            mag = torch.exp(log_mag).clamp(max=MAX_MAGNITUDE)
            spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
            return torch.istft(spec, self.cfg.n_fft, self.cfg.hop, self.cfg.n_fft, self.window, center=True)

    @torch.no_grad()
    def vocode(self, mel: Tensor | np.ndarray) -> np.ndarray:
        """Log-mel (n_mels, F) or (B, n_mels, F) -> float32 waveform (N,) or (B, N), in eval mode."""
        x = torch.as_tensor(np.asarray(mel) if not torch.is_tensor(mel) else mel, dtype=torch.float32)
        single = x.dim() == 2
        x = x[None] if single else x
        was_training = self.training
        self.eval()
        try:
            wave = self(x.to(self.window.device)).cpu().numpy().astype(np.float32)
        finally:
            self.train(was_training)
        return wave[0] if single else wave


def _init_weights(m: nn.Module) -> None:
    """Vocos's initialisation: truncated normal (std 0.02) weights, zero biases."""
    if isinstance(m, nn.Conv1d | nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


__all__ = ["ConvNeXtBlock", "Vocoder", "VocoderConfig", "tiny_vocoder_config", "MAX_MAGNITUDE"]
