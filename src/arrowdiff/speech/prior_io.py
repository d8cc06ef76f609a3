"""Save and load the mel prior (:mod:`arrowdiff.speech.prior`) through the project's weight format: a model
directory with ``metadata.json`` (keys ``prior_config`` and ``prior``) and a ``prior`` component.

A standalone prior directory has ``model_type: "mel_prior"``; ``python -m arrowdiff.weights.attach MODEL
PRIOR --component prior --metadata-keys prior_config,prior --out NEW`` joins it to a unified model, and
:func:`load_prior` reads either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from arrowdiff.speech.prior import MelPrior, MelPriorConfig
from arrowdiff.weights import QuantPolicy, load_model_dir, save_model_dir

PRIOR_COMPONENT = "prior"
PRIOR_MODEL_TYPE = "mel_prior"


def save_prior(prior: MelPrior, out_dir: Path, record: dict[str, Any], bits: int = 16) -> Path:
    """Write ``prior`` as a standalone model directory; ``record`` (training, provenance) becomes the
    metadata's ``prior`` entry."""
    meta = {
        "model_type": PRIOR_MODEL_TYPE,
        "prior_config": prior.cfg.to_dict(),
        "prior": {
            "component": PRIOR_COMPONENT,
            "paper": "Liu et al. 2022 (DiffSinger shallow diffusion); decoder after FastSpeech 2",
            "parameters": prior.num_parameters(),
            **record,
        },
    }
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in prior.state_dict().items()}
    save_model_dir(Path(out_dir), {PRIOR_COMPONENT: tensors}, meta, QuantPolicy(bits=bits))
    return Path(out_dir)


def load_prior(path: str | Path, device: str | torch.device = "cpu") -> MelPrior | None:
    """The mel prior of a model directory in eval mode, or None when it has none."""
    loaded = load_model_dir(Path(path))
    if PRIOR_COMPONENT not in loaded.components or "prior_config" not in loaded.metadata:
        return None
    prior = MelPrior(MelPriorConfig.from_dict(loaded.metadata["prior_config"]))
    loaded.load_into(prior, PRIOR_COMPONENT)
    return prior.to(device).eval()


__all__ = ["PRIOR_COMPONENT", "load_prior", "save_prior"]
