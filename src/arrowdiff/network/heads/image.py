"""Image head: VAE latents in, velocity out (R2.1, R2.3, R4.7).

``embed`` cuts a latent (B, C, h, w) into p x p patches in raster order (DiT, Peebles & Xie 2023), maps each
to a backbone token with one linear layer and adds a fixed 2-D sine-cosine position embedding (so any
latent size works); ``project`` maps tokens back to patch values and folds them into (B, C, h, w). The
output layer starts at zero (DiT), so a new head predicts zero velocity until it is trained.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from arrowdiff.config import ImageHeadConfig
from arrowdiff.errors import ConfigError
from arrowdiff.network.heads.base import Head, register_head
from arrowdiff.network.layers import zero_init


def sincos_2d(h: int, w: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed 2-D sine-cosine position embedding (Vaswani 2017, in 2-D as in MAE/DiT): (h * w, dim)."""
    quarter = dim // 4
    freqs = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device) / quarter)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        ang = coord[:, None] * freqs[None, :]
        parts += [ang.sin(), ang.cos()]
    emb = torch.cat(parts, dim=-1)
    return torch.nn.functional.pad(emb, (0, dim - emb.shape[-1]))


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, C, h, w) -> (B, (h/p) (w/p), C p p)."""
    B, C, h, w = x.shape
    x = x.reshape(B, C, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (h // p) * (w // p), C * p * p)


def unpatchify(tokens: Tensor, C: int, h: int, w: int, p: int) -> Tensor:
    """Inverse of :func:`patchify`: (B, N, C p p) -> (B, C, h, w)."""
    B = tokens.shape[0]
    x = tokens.reshape(B, h // p, w // p, C, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, C, h, w)


class ImageHead(Head):
    modality = "image"

    def __init__(self, cfg: ImageHeadConfig, dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.dim = dim
        patch_dim = cfg.latent_channels * cfg.patch * cfg.patch
        self.inp = nn.Linear(patch_dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.out = nn.Linear(dim, patch_dim)
        zero_init(self.out)
        self._hw: tuple[int, int] = (0, 0)

    def check(self, x: Tensor) -> None:
        c, p = self.cfg.latent_channels, self.cfg.patch
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] % p or x.shape[3] % p:
            raise ConfigError(
                f"image latent of shape {tuple(x.shape)}: expected (B, {c}, h, w) with h and w multiples "
                f"of the patch size {p}"
            )

    def embed(self, x: Tensor) -> Tensor:
        """Latent (B, C, h, w) -> tokens (B, (h/p)(w/p), D)."""
        self.check(x)
        p = self.cfg.patch
        h, w = x.shape[2] // p, x.shape[3] // p
        pos = sincos_2d(h, w, self.dim, x.device).to(self.inp.weight.dtype)
        return self.inp(patchify(x.to(self.inp.weight.dtype), p)) + pos

    def project(self, h: Tensor, size: tuple[int, int]) -> Tensor:
        """Tokens (B, N, D) -> prediction (B, C, h, w) for a latent of spatial ``size``."""
        return unpatchify(self.out(self.norm(h)), self.cfg.latent_channels, *size, self.cfg.patch)


@register_head("image")
def build_image_head(cfg: ImageHeadConfig, dim: int, shared: Head | None = None) -> ImageHead:
    return ImageHead(cfg, dim)


__all__ = ["ImageHead", "patchify", "sincos_2d", "unpatchify"]
