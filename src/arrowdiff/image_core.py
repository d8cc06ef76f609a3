"""ImageCore: text-to-image by latent Gaussian (flow) diffusion on the shared backbone (R2, R12.6).

Data flow: caption -> MiniLM embedding -> caption conditioner (cross-attention) -> velocity denoiser
(+ classifier-free guidance, one batched pass) -> continuous sampler from N(0, I) latents -> VAE decoder
-> (H, W, 3) uint8.

Sizes: the model is trained on ``image.latent_size`` latents (64x64 pixels for the shipped model). Any
other size that is a multiple of the VAE factor is made *through the VAE*: the latent is sampled at the
trained size, resized to ``(H/f, W/f)`` with bicubic interpolation, and decoded at that size by the
fully convolutional decoder (so 512x512 costs one trained-size denoising run plus one 512x512 decode).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from arrowdiff.errors import ConfigError
from arrowdiff.network.denoiser import Cond
from arrowdiff.network.model import UnifiedModel
from arrowdiff.samplers import CONTINUOUS_SAMPLERS, initial_noise, sample_euler, sample_stochastic
from arrowdiff.schedules import timesteps

MAX_SIDE = 2048


@dataclass(frozen=True)
class ImageOptions:
    """How to sample an image; validated once for every entry point."""

    num_steps: int = 20
    guidance_scale: float = 3.0  # classifier-free guidance on the caption: 1 = off, 0 = unconditioned
    sampler: str = "euler"  # euler | stochastic
    eta: float = 1.0  # stochastic sampler only: share of the posterior noise (1 = ancestral)
    spacing: str = "uniform"
    height: int | None = None  # None = the trained size
    width: int | None = None

    def __post_init__(self) -> None:
        if (
            not isinstance(self.num_steps, int)
            or isinstance(self.num_steps, bool)
            or not 1 <= self.num_steps <= 1000
        ):
            raise ConfigError(
                f"num_steps={self.num_steps!r} must be an integer in [1, 1000] (try 4, 20 or 50)"
            )
        if not 0.0 <= self.guidance_scale <= 20.0:
            raise ConfigError(f"guidance_scale={self.guidance_scale} must be in [0, 20] (1 = no guidance)")
        if self.sampler not in CONTINUOUS_SAMPLERS:
            raise ConfigError(
                f"sampler={self.sampler!r} for images: expected one of {', '.join(CONTINUOUS_SAMPLERS)}"
            )
        for side in (self.height, self.width):
            if side is not None and (not isinstance(side, int) or not 8 <= side <= MAX_SIDE):
                raise ConfigError(
                    f"image size {self.height}x{self.width}: each side must be an integer in [8, {MAX_SIDE}]"
                )


class ImageCore:
    """Samples images with one UnifiedModel (image head + caption conditioner) and its VAE."""

    def __init__(
        self, model: UnifiedModel, vae: torch.nn.Module, embed: Callable[[list[str]], np.ndarray]
    ) -> None:
        self.model = model.eval()
        self.vae = vae.eval()
        self.embed = embed
        self.cfg = model.cfg.image

    def velocity(
        self, caption: Tensor | None, scale: float, memory: Cond | None = None
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """The guided velocity v_u + w (v_c - v_u). Guidance acts on the caption, whose conditioned and
        unconditioned rows share one batched pass, or on the memories when ``memory`` is given (R2.7)."""
        model = self.model

        def run(x: Tensor, t: Tensor, cap_mask: Tensor | None, mem: Cond | None) -> Tensor:
            B = x.shape[0]
            c = None if caption is None else caption.expand(B, -1, -1)
            m = mm = None
            if mem is not None and mem.memory is not None:
                m = mem.memory.expand(B, -1, -1)
                mm = None if mem.memory_mask is None else mem.memory_mask.expand(B, -1)
            return model(x, t, "image", caption=c, caption_mask=cap_mask, memory=m, memory_mask=mm)

        def v(x: Tensor, t: Tensor) -> Tensor:
            B = x.shape[0]
            if memory is not None:
                if scale == 1.0:
                    return run(x, t, None, memory)
                vc, vu = run(x, t, None, memory), run(x, t, None, None)
                return vu + scale * (vc - vu)
            if caption is None or scale == 1.0:
                return run(x, t, None, None)
            if scale == 0.0:
                return model(x, t, "image")
            mask = torch.cat([torch.ones(B, 1, dtype=torch.bool), torch.zeros(B, 1, dtype=torch.bool)])
            out = run(torch.cat([x, x]), torch.cat([t, t]), mask, None)
            vc, vu = out[:B], out[B:]
            return vu + scale * (vc - vu)

        return v

    @torch.inference_mode()
    def sample_latents(
        self,
        prompt: str,
        opts: ImageOptions,
        seed: int | None,
        batch: int = 1,
        progress: bool = False,
        memory: Cond | None = None,
    ) -> Tensor:
        """Scaled latents (batch, C, h, w) at the trained size."""
        caption = None
        if prompt:
            caption = torch.from_numpy(self.embed([prompt]).astype(np.float32))[:, None, :]
        g = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**63)
        s = self.cfg.latent_size
        x = initial_noise((batch, self.cfg.latent_channels, s, s), g)
        times = timesteps(opts.num_steps, opts.spacing).float()
        bar = tqdm(total=opts.num_steps, disable=not progress, desc="diffuse image", leave=False)
        tick = lambda i, x: bar.update(1)  # noqa: E731
        v = self.velocity(caption, opts.guidance_scale, memory)
        if opts.sampler == "euler":
            z = sample_euler(v, x, times, callback=tick)
        else:
            z = sample_stochastic(v, x, times, eta=opts.eta, generator=g, callback=tick)
        bar.close()
        return z

    @torch.inference_mode()
    def decode(self, z: Tensor, height: int | None, width: int | None) -> np.ndarray:
        """Scaled latents -> (batch, H, W, 3) uint8, resized through the VAE when the size differs."""
        f = self.cfg.downsample
        H = height or self.cfg.image_size
        W = width or self.cfg.image_size
        if H % f or W % f:
            raise ConfigError(
                f"image size {H}x{W} must be a multiple of {f} on each side (the VAE factor); try "
                f"{max(f, round(H / f) * f)}x{max(f, round(W / f) * f)}"
            )
        if (H // f, W // f) != tuple(z.shape[-2:]):
            z = F.interpolate(z, size=(H // f, W // f), mode="bicubic", align_corners=False)
        x = self.vae.from_latents(z)
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def generate(
        self,
        prompt: str,
        opts: ImageOptions,
        seed: int | None = None,
        progress: bool = False,
        memory: Cond | None = None,
    ) -> np.ndarray:
        """One image (H, W, 3) uint8 for ``prompt`` (an empty prompt samples unconditionally)."""
        z = self.sample_latents(prompt, opts, seed, progress=progress, memory=memory)
        return self.decode(z, opts.height, opts.width)[0]


__all__ = ["ImageCore", "ImageOptions"]
