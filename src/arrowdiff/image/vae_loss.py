"""The VAE training objective: reconstruction (L1, optional L2) + (1 - SSIM) + a small KL term.

As in LDM (Rombach et al. 2022) the KL weight is relative to a reconstruction loss summed over pixels, so
``kl = 1e-6`` here is the kl_weight of LDM's kl-f8 config although both terms are computed as per-pixel
means. The SSIM term (Wang et al. 2004) replaces LDM's LPIPS, for which no pretrained network
exists offline; mixing L1 with an SSIM loss follows Zhao et al. 2017 ("Loss Functions for Image
Restoration with Neural Networks"). No adversarial term: the decoder stays small and training stays short.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from arrowdiff.errors import ConfigError
from arrowdiff.image.metrics import ssim
from arrowdiff.image.vae import VAE, kl_divergence


@dataclass(frozen=True)
class VAELossWeights:
    """Weights of the loss terms."""

    l1: float = 1.0  # mean |x_hat - x| on [-1, 1] images
    l2: float = 0.0  # mean (x_hat - x)**2
    ssim: float = 0.5  # 1 - SSIM (11x11 Gaussian window) on [0, 1] intensities
    kl: float = 1e-6  # KL to N(0, I), relative to the reconstruction summed over pixels (LDM convention)

    def __post_init__(self) -> None:
        for name in ("l1", "l2", "ssim", "kl"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss weight {name}={getattr(self, name)} must be >= 0")
        if self.l1 == self.l2 == self.ssim == 0:
            raise ConfigError("at least one of the l1, l2, ssim loss weights must be > 0")


def vae_loss(
    vae: VAE | torch.nn.Module,
    x: torch.Tensor,
    weights: VAELossWeights,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch ``x`` (B, 3, H, W) in [-1, 1], and its terms as floats for logging."""
    x_hat, mean, logvar = vae(x, generator)  # forward, so that a torch.compile'd VAE runs compiled
    x_hat = x_hat.float()
    x = x.to(x_hat.device).float()
    l1 = (x_hat - x).abs().mean()
    l2 = (x_hat - x).pow(2).mean()
    # SSIM on [0, 1] intensities: its luminance term assumes non-negative values
    ssim_loss = 1.0 - ssim((x_hat + 1) / 2, (x + 1) / 2, data_range=1.0).mean() if weights.ssim else l1 * 0
    kl = kl_divergence(mean.float(), logvar.float()).mean() / x[0].numel()  # per pixel (LDM scale)
    loss = weights.l1 * l1 + weights.l2 * l2 + weights.ssim * ssim_loss + weights.kl * kl
    stats = {
        "l1": l1.item(),
        "l2": l2.item(),
        "ssim_loss": float(ssim_loss.detach()),
        "kl_per_pixel": kl.item(),
        "latent_std": mean.detach().float().std().item(),
    }
    return loss, stats
