"""Multi-resolution discriminator (MRD) for the vocoder's optional adversarial training.

Jang et al. 2021, "UnivNet: A Neural Vocoder with Multi-Resolution Spectrogram Discriminators for
High-Fidelity Waveform Generation" (section 3.2), the MRD Vocos (Siuzdak 2023) also trains with: one 2-D
convolutional discriminator per STFT resolution, each reading the linear magnitude spectrogram (B, 1,
bins, frames). Five weight-normalised convolutions (32 channels; kernels 3x9 with stride 2 along time, then
3x3) with leaky ReLU 0.2 and a 3x3 output convolution to one channel of real/fake scores. Every layer's
output is returned for the feature-matching loss. Used only during training; never exported.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

# UnivNet's (n_fft, hop, window) triples
MRD_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
LRELU_SLOPE = 0.2


class ResolutionDiscriminator(nn.Module):
    """One MRD branch: wave (B, N) -> (scores (B, 1, bins, T'), feature maps)."""

    def __init__(self, resolution: tuple[int, int, int], channels: int = 32) -> None:
        super().__init__()
        self.resolution = tuple(resolution)
        c = channels
        self.convs = nn.ModuleList(
            [
                weight_norm(nn.Conv2d(1, c, (3, 9), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
            ]
        )
        self.conv_post = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def spectrogram(self, wave: Tensor) -> Tensor:
        """Linear magnitude (B, 1, n_fft // 2 + 1, frames) in float32."""
        n_fft, hop, win = self.resolution
        with torch.autocast(wave.device.type, enabled=False):
            window = torch.hann_window(win, device=wave.device)
            spec = torch.stft(wave.float(), n_fft, hop, win, window, center=True, return_complex=True)
            return spec.abs().unsqueeze(1)

    def forward(self, wave: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.spectrogram(wave)
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return x, fmap


class MultiResolutionDiscriminator(nn.Module):
    """``forward(wave (B, N)) -> (scores per resolution, feature maps per resolution)``."""

    def __init__(self, resolutions: Sequence[tuple[int, int, int]] = MRD_RESOLUTIONS, channels: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(ResolutionDiscriminator(r, channels) for r in resolutions)

    def forward(self, wave: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        scores, fmaps = [], []
        for d in self.discriminators:
            s, f = d(wave)
            scores.append(s)
            fmaps.append(f)
        return scores, fmaps


__all__ = ["MRD_RESOLUTIONS", "MultiResolutionDiscriminator", "ResolutionDiscriminator"]
