"""Save and load the VAE through the project's weight format (weights/FORMAT.md): a model directory with
``metadata.json`` and a ``vae`` component (``vae.parquet``).

A standalone VAE directory has ``model_type: "autoencoder_kl"``. A unified model directory can carry the
same component next to its backbone and heads: it then needs the same ``vae_config`` (and ``vae``) keys
in its metadata, which :func:`vae_metadata` makes, and :func:`load_vae` reads it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from arrowdiff.errors import WeightFormatError
from arrowdiff.image.vae import VAE, VAEConfig
from arrowdiff.weights import QuantPolicy, load_model_dir, save_model_dir

VAE_COMPONENT = "vae"
VAE_MODEL_TYPE = "autoencoder_kl"


def vae_metadata(vae: VAE, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata.json keys that describe the VAE (config, latent geometry, scale factor, provenance)."""
    return {
        "vae_config": vae.cfg.to_dict(),
        "vae": {
            "component": VAE_COMPONENT,
            "downsample": vae.cfg.downsample,
            "latent_channels": vae.cfg.latent_channels,
            "scale_factor": float(vae.scale_factor),
            "parameters": vae.num_parameters(),
            "image_range": [-1.0, 1.0],
            "paper": "Rombach et al. 2022 (LDM KL autoencoder), small and attention-free",
        },
        "training": training or {},
    }


def vae_state_dict(vae: VAE) -> dict[str, torch.Tensor]:
    """The ``vae`` component's tensors (fp32, CPU)."""
    return {k: v.detach().float().cpu().contiguous() for k, v in vae.state_dict().items()}


def save_vae(vae: VAE, out_dir: Path, training: dict[str, Any] | None = None, bits: int = 16) -> Path:
    """Write ``vae`` as a standalone model directory (weights stored at ``bits``; 32 is lossless)."""
    meta = {"model_type": VAE_MODEL_TYPE, **vae_metadata(vae, training)}
    save_model_dir(Path(out_dir), {VAE_COMPONENT: vae_state_dict(vae)}, meta, QuantPolicy(bits=bits))
    return Path(out_dir)


def load_vae(path: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Load the VAE of a model directory (standalone or unified with a ``vae`` component), in eval mode."""
    loaded = load_model_dir(Path(path))
    if VAE_COMPONENT not in loaded.components or "vae_config" not in loaded.metadata:
        raise WeightFormatError(
            f"{path}: no VAE here (needs a '{VAE_COMPONENT}' component and 'vae_config' in metadata.json; it "
            f"has components {sorted(loaded.components)}); train one with python -m arrowdiff.image.train_vae"
        )
    vae = VAE(VAEConfig.from_dict(loaded.metadata["vae_config"]))
    loaded.load_into(vae, VAE_COMPONENT)
    return vae.to(device).eval()
