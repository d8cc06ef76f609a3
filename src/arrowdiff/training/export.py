"""Write a trained run as a model directory (weights/FORMAT.md): metadata.json + Parquet components."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from arrowdiff.config import ModelConfig
from arrowdiff.network.model import UnifiedModel, backbone_share
from arrowdiff.weights import QuantPolicy, load_model_dir, save_model_dir
from arrowdiff.weights.model_dir import read_metadata


def model_metadata(cfg: ModelConfig, model: UnifiedModel, training: dict[str, Any]) -> dict[str, Any]:
    """metadata.json content required by R15 (the weight writer adds format and quantization keys)."""
    b = cfg.backbone
    split = model.parameter_split()
    return {
        "model_type": "unified_diffusion" if cfg.objective == "mdlm" else "autoregressive_baseline",
        "diffusion_config": {
            "hidden_dim": b.dim,
            "num_layers": b.num_layers,
            "num_heads": b.num_heads,
            "intermediate_dim": b.mlp_dim,
            "cond_dim": b.cond_dim,
            "vocab_size": cfg.text.vocab_size,
        },
        "scheduler": {
            "type": "masked_absorbing" if cfg.objective == "mdlm" else "none",
            "discrete_schedule": cfg.schedule.discrete,
            "continuous_schedule": cfg.schedule.continuous,
            "num_train_steps": cfg.schedule.num_train_steps,
            "num_inference_steps": cfg.schedule.num_inference_steps,
        },
        "supported_modalities": list(cfg.modalities),
        "context_length": training.get("seq_len"),
        "consistency_distilled": False,
        "model_config": cfg.to_dict(),
        "parameters": {
            **split,
            "total": sum(split.values()),
            "backbone_share": round(backbone_share(split), 4),
        },
        "tokenizer": "tokenizer.json",
        "training": training,
    }


def export_model(
    model: UnifiedModel,
    tokenizer_path: Path,
    out_dir: Path,
    training: dict[str, Any],
    policy: QuantPolicy,
    vae_dir: Path | None = None,
    vocoder_dir: Path | None = None,
) -> Path:
    """Save weights (through ArrowQuant with ``policy``), metadata.json and the tokenizer to ``out_dir``.

    ``vae_dir``: the VAE the image head's latents come from joins the directory as component ``vae``
    (its convolutions kept at 16 bits). ``vocoder_dir``: the mel vocoder joins as component ``vocoder``;
    it and the ``voice`` model are kept at 16 bits too."""
    model = model.float().cpu()
    out_dir = Path(out_dir)
    components = model.component_state_dicts()
    meta = model_metadata(model.cfg, model, training)
    if vae_dir is not None:
        from arrowdiff.image.vae_io import VAE_COMPONENT, load_vae, vae_metadata, vae_state_dict

        vae = load_vae(vae_dir)
        components[VAE_COMPONENT] = vae_state_dict(vae)
        vmeta = vae_metadata(vae, load_model_dir(vae_dir).metadata.get("training"))
        meta["vae_config"], meta["vae"] = vmeta["vae_config"], {**vmeta["vae"], "training": vmeta["training"]}
        policy = QuantPolicy(
            bits=policy.bits,
            group_size=policy.group_size,
            method=policy.method,
            vector_bits=policy.vector_bits,
            keep=(*policy.keep, ("encoder.*", 16), ("decoder.*", 16)),
        )
    if vocoder_dir is not None:
        from arrowdiff.speech.vocoder_io import (
            VOCODER_COMPONENT,
            load_vocoder,
            vocoder_metadata,
            vocoder_state_dict,
        )

        voc = load_vocoder(vocoder_dir)
        components[VOCODER_COMPONENT] = vocoder_state_dict(voc)
        vm = vocoder_metadata(voc, load_model_dir(vocoder_dir).metadata.get("training"))
        meta["vocoder_config"], meta["vocoder"] = vm["vocoder_config"], vm["vocoder"]
    if "voice" in components or vocoder_dir is not None:
        policy = replace(policy, keep=(*policy.keep, ("voice/*", 16), ("vocoder/*", 16)))
    save_model_dir(out_dir, components, meta, policy)
    shutil.copyfile(tokenizer_path, out_dir / "tokenizer.json")
    return out_dir


def init_provenance(init_dir: Path, tokens_seen: int) -> dict[str, Any]:
    """Where a continued run started: the init model's own training record (its command, tokens and seed,
    without its nested history) and ``tokens_seen_total``, the tokens of the whole chain of runs."""
    src = read_metadata(Path(init_dir)).get("training", {})
    before = int(src.get("tokens_seen_total", src.get("tokens_seen", 0)) or 0)
    keep = ("command", "tokens_seen", "tokens_seen_total", "steps", "seed", "wall_time_s")
    return {
        "init_from": {"path": str(init_dir), "training": {k: src[k] for k in keep if k in src}},
        "tokens_seen_total": before + tokens_seen,
    }


def export_run(
    out: Path,
    model: UnifiedModel,
    cfg: ModelConfig,
    tokenizer_path: Path,
    manifest: dict[str, Any],
    args: argparse.Namespace,
    tokens_seen: int,
    wall_s: float,
) -> Path:
    """Export the end of a training run to ``<out>/model`` with its full recipe in metadata.json."""
    from arrowdiff.training.train import command_line  # local: train imports this module lazily too

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    last_eval = next((r for r in reversed(log) if any(k.startswith("val_") for k in r)), {})
    training = {
        "command": command_line(args),
        "objective": cfg.objective,
        "preset": args.preset,
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "tokens_seen": tokens_seen,
        "lr": args.lr,
        "schedule": args.schedule,
        "code_frac": args.code_frac,
        "device": args.device,
        "bf16": args.bf16,
        "wall_time_s": round(wall_s, 1),
        "final_eval": {k: v for k, v in last_eval.items() if k.startswith("val_")},
        "data": {
            "recipe": "python -m arrowdiff.training.corpus (see `make data`)",
            "manifest_sha256": hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest(),
            "tokenizer_sha256": manifest.get("tokenizer_sha256"),
            "sources": manifest.get("sources"),
            "train_tokens": {
                k: v.get("tokens") for k, v in manifest.get("shards", {}).items() if isinstance(v, dict)
            },
        },
    }
    if getattr(args, "init_from", None):
        training.update(init_provenance(Path(args.init_from), tokens_seen))
    vae_dir = None
    if getattr(args, "memory", None):
        training["memory_data"] = {
            "recipe": "python -m arrowdiff.training.memory_data",
            "manifest": json.loads((Path(args.memory) / "manifest.json").read_text()),
            "memory_k": args.memory_k,
            "cond_dropout": args.cond_dropout,
        }
    if getattr(args, "images", None):
        latent_manifest = json.loads((Path(args.images) / "manifest.json").read_text())
        vae_dir = Path(latent_manifest["vae"])
        training["image_data"] = {
            "recipe": "python -m arrowdiff.image.dataset build; python -m arrowdiff.training.image_data",
            "manifest": latent_manifest,
            "image_batch_size": args.image_batch_size,
            "caption_dropout": args.caption_dropout,
        }
    if getattr(args, "speech", None):
        training["speech_data"] = {
            "recipe": "python -m arrowdiff.speech.build_data",
            "manifest": json.loads((Path(args.speech) / "manifest.json").read_text()),
            "speech_batch_size": args.speech_batch_size,
            "speaker_dropout": args.speaker_dropout,
        }
    policy = QuantPolicy(bits=args.export_bits)
    vocoder_dir = Path(args.vocoder) if getattr(args, "vocoder", None) else None
    return export_model(model, tokenizer_path, out / "model", training, policy, vae_dir, vocoder_dir)
