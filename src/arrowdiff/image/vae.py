"""A small KL-regularised convolutional autoencoder: the image VAE of latent diffusion.

The design is the KL autoencoder of Rombach et al. 2022 ("High-Resolution Image Synthesis with Latent
Diffusion Models", kl-f8: 8x downsampling, 4 latent channels, a diagonal Gaussian posterior trained with
reconstruction + a small KL term, Kingma & Welling 2014), made small and without attention so it stays
fully convolutional: any image whose sides are multiples of 8 encodes, a 64x64 image to a 4x8x8 latent
and a 512x512 image to 4x64x64. The decoder is light (widths shrink towards full resolution), so a
512x512 decode costs well under the 7-17 s of a Stable-Diffusion-size decoder on a 2-core CPU.

Notation: images ``x`` are ``(B, 3, H, W)`` floats in [-1, 1] (or uint8 ``(B, H, W, 3)`` at the edges);
``mean``, ``logvar`` and ``z`` are ``(B, C_z, H/f, W/f)`` with ``f`` = ``cfg.downsample``. Diffusion runs
on ``z * scale_factor`` (unit variance over the training set, as LDM rescales its latents).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from arrowdiff.errors import ConfigError

LOGVAR_RANGE = (-30.0, 20.0)  # LDM's DiagonalGaussianDistribution clamp


@dataclass(frozen=True)
class VAEConfig:
    """Shape of the autoencoder. Encoder level i works at 1/2**i of the image size; the decoder mirrors it."""

    in_channels: int = 3  # RGB
    latent_channels: int = 4  # C_z (LDM kl-f8 uses 4)
    channels: tuple[int, ...] = (32, 64, 96, 128)  # width per level, full resolution first; f = 2**(len-1)
    encoder_blocks: tuple[int, ...] = (1, 1, 1, 2)  # residual blocks per encoder level
    decoder_blocks: tuple[int, ...] = (1, 1, 2, 2)  # residual blocks per decoder level (same indexing)
    # GroupNorm groups in residual blocks; 0 = none (the default: every layer stays local, so statistics do
    # not shift between the 64x64 training size and 512x512, as in TAESD; measured equal quality at 64x64)
    norm_groups: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "encoder_blocks", tuple(int(b) for b in self.encoder_blocks))
        object.__setattr__(self, "decoder_blocks", tuple(int(b) for b in self.decoder_blocks))
        if self.in_channels < 1 or self.latent_channels < 1:
            raise ConfigError(
                f"in_channels={self.in_channels}, latent_channels={self.latent_channels} must be >= 1 "
                "(defaults: 3 and 4)"
            )
        if not 1 <= len(self.channels) <= 6 or min(self.channels) < 1:
            raise ConfigError(
                f"channels={self.channels} needs 1 to 6 positive widths, e.g. (32, 64, 128, 128)"
            )
        for name in ("encoder_blocks", "decoder_blocks"):
            blocks = getattr(self, name)
            if len(blocks) != len(self.channels) or min(blocks) < 0:
                raise ConfigError(
                    f"{name}={blocks} needs one count >= 0 per level of channels={self.channels}"
                )
        if self.norm_groups < 0 or (self.norm_groups and any(c % self.norm_groups for c in self.channels)):
            raise ConfigError(
                f"norm_groups={self.norm_groups} must be 0 or divide every width in {self.channels}; try 8"
            )

    @property
    def downsample(self) -> int:
        """The factor f between image and latent sides (8 for four levels)."""
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in metadata.json)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"unknown VAEConfig keys {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**d)


def tiny_vae_config() -> VAEConfig:
    """A 2-level, width-8 config for tests (f = 2)."""
    return VAEConfig(channels=(8, 8), encoder_blocks=(1, 1), decoder_blocks=(1, 1), norm_groups=4)


class ResBlock(nn.Module):
    """norm-SiLU-conv-norm-SiLU-conv plus a skip (1x1 conv when widths differ); the last conv starts at
    zero so every block starts as the identity."""

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in) if groups else nn.Identity()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out) if groups else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    """x (B, 3, H, W) -> (mean, logvar) stacked as (B, 2 C_z, H/f, W/f)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, g = cfg.channels, cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.levels = nn.ModuleList()
        for i, c in enumerate(ch):
            level = nn.Sequential(*[ResBlock(c, c, g) for _ in range(cfg.encoder_blocks[i])])
            if i + 1 < len(ch):  # 2x down: stride-2 conv (LDM's Downsample)
                level.append(nn.Conv2d(c, ch[i + 1], 3, stride=2, padding=1))
            self.levels.append(level)
        self.norm_out = nn.GroupNorm(g, ch[-1]) if g else nn.Identity()
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """z (B, C_z, H/f, W/f) -> x (B, 3, H, W), unclamped."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, g = cfg.channels, cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[-1], 3, padding=1)
        self.levels = nn.ModuleList()
        for i in reversed(range(len(ch))):
            level = nn.Sequential(*[ResBlock(ch[i], ch[i], g) for _ in range(cfg.decoder_blocks[i])])
            if i > 0:  # 2x up: nearest neighbour + conv (LDM's Upsample)
                level.extend(
                    [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(ch[i], ch[i - 1], 3, padding=1)]
                )
            self.levels.append(level)
        self.norm_out = nn.GroupNorm(g, ch[0]) if g else nn.Identity()
        self.conv_out = nn.Conv2d(ch[0], cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per sample, summed over latent dims: (B,).

    ``0.5 * sum(mean**2 + exp(logvar) - 1 - logvar)``; zero exactly when the posterior is the prior.
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def images_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Model input (B, 3, H, W) float32 in [-1, 1] from uint8 images laid out (B, H, W, 3) or (H, W, 3)
    (the shard layout), or from a float tensor already (B, 3, H, W) / (3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not torch.is_tensor(x):
        raise ConfigError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
    if x.dtype == torch.uint8:
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[-1] not in (1, 3, 4):
            raise ConfigError(f"uint8 images must be (B, H, W, 3) or (H, W, 3), got {tuple(x.shape)}")
        return x[..., :3].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    if not x.is_floating_point():
        raise ConfigError(
            f"images must be uint8 (B, H, W, 3) or float (B, 3, H, W) in [-1, 1], got {x.dtype}"
        )
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise ConfigError(f"float images must be (B, 3, H, W) in [-1, 1], got shape {tuple(x.shape)}")
    return x


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [-1, 1] -> (B, H, W, 3) uint8 (rounded, clipped)."""
    y = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).cpu().numpy()


class VAE(nn.Module):
    """KL autoencoder: ``encode`` -> ``(mean, logvar)``, ``sample`` -> ``z``, ``decode`` -> images.

    ``scale_factor`` (a buffer, saved with the weights) is 1/std of ``z`` over the training set, set after
    training (LDM's latent scaling); ``to_latents``/``from_latents`` apply it for diffusion.
    """

    def __init__(self, cfg: VAEConfig | None = None) -> None:
        super().__init__()
        cfg = VAEConfig() if cfg is None else cfg
        if not isinstance(cfg, VAEConfig):
            raise ConfigError(f"cfg must be a VAEConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.register_buffer("scale_factor", torch.tensor(1.0))

    def check_size(self, height: int, width: int) -> None:
        """Raise ConfigError unless both sides are positive multiples of the downsampling factor."""
        f = self.cfg.downsample
        if height % f or width % f or height < f or width < f:
            fix_h, fix_w = max(f, round(height / f) * f), max(f, round(width / f) * f)
            raise ConfigError(
                f"image size {height}x{width} is not a multiple of {f} (the VAE downsamples by {f}); "
                f"resize or pad it to {fix_h}x{fix_w}"
            )

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(C_z, H/f, W/f)`` of an image of ``height x width``."""
        self.check_size(height, width)
        f = self.cfg.downsample
        return (self.cfg.latent_channels, height // f, width // f)

    def encode(self, images: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters ``(mean, logvar)``, each (B, C_z, H/f, W/f), of uint8 or [-1, 1] images."""
        x = images_to_tensor(images)
        if x.shape[1] != self.cfg.in_channels:
            raise ConfigError(
                f"images have {x.shape[1]} channels, the VAE takes {self.cfg.in_channels} (RGB)"
            )
        self.check_size(x.shape[-2], x.shape[-1])
        p = next(self.parameters())
        moments = self.encoder(x.to(device=p.device, dtype=p.dtype))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    @staticmethod
    def sample(
        mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``z = mean + exp(logvar / 2) * eps`` (the reparameterisation trick, Kingma & Welling 2014)."""
        device = generator.device if generator is not None else mean.device
        eps = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype).to(mean.device)
        return mean + (0.5 * logvar).exp() * eps

    def decode(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Images (B, 3, f h, f w) in [-1, 1] (clamped unless ``clamp=False``) from latents (B, C_z, h, w)."""
        if z.dim() != 4 or z.shape[1] != self.cfg.latent_channels:
            raise ConfigError(
                f"latents must be (B, {self.cfg.latent_channels}, h, w), got {tuple(z.shape)}; pass "
                "vae.encode() output, or use from_latents() for scaled latents"
            )
        p = next(self.parameters())
        x = self.decoder(z.to(device=p.device, dtype=p.dtype))
        return x.clamp(-1.0, 1.0) if clamp else x

    def forward(
        self, images: np.ndarray | torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training path: ``(unclamped reconstruction, mean, logvar)``, ``z`` drawn from the posterior."""
        mean, logvar = self.encode(images)
        return self.decode(self.sample(mean, logvar, generator), clamp=False), mean, logvar

    def to_latents(
        self, images: np.ndarray | torch.Tensor, generator: torch.Generator | None = None, sample: bool = True
    ) -> torch.Tensor:
        """Scaled latents for diffusion: ``z * scale_factor`` (``z`` = posterior mean if ``sample=False``)."""
        mean, logvar = self.encode(images)
        z = self.sample(mean, logvar, generator) if sample else mean
        return z * self.scale_factor

    def from_latents(self, z_scaled: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from scaled latents (the inverse of :meth:`to_latents`'s scaling)."""
        return self.decode(z_scaled / self.scale_factor)

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: ``{"encoder": ..., "decoder": ..., "total": ...}``."""
        enc = sum(p.numel() for p in self.encoder.parameters())
        dec = sum(p.numel() for p in self.decoder.parameters())
        return {"encoder": enc, "decoder": dec, "total": enc + dec}
