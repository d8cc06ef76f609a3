"""Save and load the vocoder through the project's weight format (weights/FORMAT.md): a model directory
with ``metadata.json`` and a ``vocoder`` component (``vocoder.parquet``).

A standalone vocoder directory has ``model_type: "vocoder"``. A unified model directory can carry the same
component next to its backbone and heads: it then needs the same ``vocoder_config`` (and ``vocoder``) keys
in its metadata, which :func:`vocoder_metadata` makes, and :func:`load_vocoder` reads it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from arrowdiff.errors import WeightFormatError
from arrowdiff.speech.vocoder import Vocoder, VocoderConfig
from arrowdiff.weights import QuantPolicy, load_model_dir, save_model_dir

VOCODER_COMPONENT = "vocoder"
VOCODER_MODEL_TYPE = "vocoder"


def vocoder_metadata(vocoder: Vocoder, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata.json keys that describe the vocoder (config, mel it decodes, provenance)."""
    return {
        "vocoder_config": vocoder.cfg.to_dict(),
        "vocoder": {
            "component": VOCODER_COMPONENT,
            "paper": "Siuzdak 2023 (Vocos: ConvNeXt at the frame rate + inverse STFT head)",
            "sample_rate": vocoder.cfg.sample_rate,
            "mel": vocoder.cfg.mel_config().to_dict(),
            "mel_scale": "slaney, natural log of magnitude clamped at 1e-5 (arrowdiff.speech.mel.log_mel)",
            "samples_per_frame": vocoder.cfg.hop,
            "parameters": vocoder.num_parameters(),
            "training": training or {},
        },
    }


def vocoder_state_dict(vocoder: Vocoder) -> dict[str, torch.Tensor]:
    """The ``vocoder`` component's tensors (fp32, CPU)."""
    return {k: v.detach().float().cpu().contiguous() for k, v in vocoder.state_dict().items()}


def save_vocoder(
    vocoder: Vocoder, out_dir: Path, training: dict[str, Any] | None = None, bits: int = 16
) -> Path:
    """Write ``vocoder`` as a standalone model directory (weights stored at ``bits``; 32 is lossless)."""
    meta = {"model_type": VOCODER_MODEL_TYPE, **vocoder_metadata(vocoder, training)}
    policy = QuantPolicy(bits=bits)
    save_model_dir(Path(out_dir), {VOCODER_COMPONENT: vocoder_state_dict(vocoder)}, meta, policy)
    return Path(out_dir)


def load_vocoder(path: str | Path, device: str | torch.device = "cpu") -> Vocoder:
    """Load the vocoder of a model directory (standalone or unified with a ``vocoder`` component), in eval
    mode."""
    loaded = load_model_dir(Path(path))
    if VOCODER_COMPONENT not in loaded.components or "vocoder_config" not in loaded.metadata:
        raise WeightFormatError(
            f"{path}: no vocoder here (needs a '{VOCODER_COMPONENT}' component and 'vocoder_config' in "
            f"metadata.json; it has components {sorted(loaded.components)}); train one with "
            "python -m arrowdiff.speech.train_vocoder"
        )
    vocoder = Vocoder(VocoderConfig.from_dict(loaded.metadata["vocoder_config"]))
    loaded.load_into(vocoder, VOCODER_COMPONENT)
    return vocoder.to(device).eval()


__all__ = ["VOCODER_COMPONENT", "load_vocoder", "save_vocoder", "vocoder_metadata", "vocoder_state_dict"]
