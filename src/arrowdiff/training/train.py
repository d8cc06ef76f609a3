"""``arrowdiff train``: one training loop for masked diffusion (mdlm) and the causal baseline (ar).

The same command runs on a 2-core CPU and on a GPU (``--device cuda``), and under ``torchrun`` for
DDP (gloo on CPU, nccl on GPU). Batches are pure functions of (seed, step, rank), so ``--resume``
continues exactly where a checkpoint left off. The learning rate follows warmup-stable-decay.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from arrowdiff.config import ModelConfig, get_preset
from arrowdiff.errors import ConfigError
from arrowdiff.network.model import UnifiedModel
from arrowdiff.schedules import get_mask_schedule
from arrowdiff.training.batches import ShardSampler, fixed_windows, step_generator
from arrowdiff.training.checkpoint import load_checkpoint, save_checkpoint
from arrowdiff.training.image_data import LatentSet
from arrowdiff.training.losses import ar_loss, flow_loss, mdlm_loss, speech_loss
from arrowdiff.training.memory_data import MemorySet, memory_batch
from arrowdiff.training.shards import load_manifest, open_shard
from arrowdiff.training.speech_data import SpeechWindows
from arrowdiff.training.speech_steps import builtin_voices, evaluate_speech


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="arrowdiff train", description=__doc__)
    p.add_argument("--preset", default="small", help="model size: tiny | small | base | workstation")
    p.add_argument("--objective", default="mdlm", choices=["mdlm", "ar"])
    p.add_argument("--schedule", default="loglinear", help="masking schedule: loglinear | cosine | linear")
    p.add_argument("--data", default="data/shards", help="token shards from `make data`")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (default: <data>/../tokenizer.json)")
    p.add_argument("--out", required=True, help="run directory: checkpoint/, log.jsonl, model/")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (global, across ranks)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument(
        "--decay-frac", type=float, default=0.2, help="final fraction of steps with linear LR decay"
    )
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--code-frac", type=float, default=0.4, help="share of code sequences in a batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-windows", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU, or CPUs with bf16 support)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint")
    p.add_argument(
        "--init-from",
        default=None,
        help="start from an exported model directory's weights, e.g. an AR model (AR initialisation "
        "of masked diffusion, DiffuLLaMA/Dream); same architecture",
    )
    p.add_argument(
        "--stop-at",
        type=int,
        default=0,
        help="checkpoint and stop at this step (the LR schedule still spans --steps); resume later",
    )
    p.add_argument(
        "--memory",
        default=None,
        help="memory-guided training: a directory from `python -m arrowdiff.training.memory_data`; each "
        "text window is conditioned on MiniLM embeddings of other chunks of its document",
    )
    p.add_argument("--memory-k", type=int, default=4, help="at most this many memories per window")
    p.add_argument(
        "--cond-dropout", type=float, default=0.2, help="share of windows trained without memories (CFG)"
    )
    p.add_argument(
        "--images",
        default=None,
        help="joint text-to-image training: a latent directory from `python -m arrowdiff.training.image_data`"
        " (VAE latents + MiniLM captions); adds the image head and caption conditioner",
    )
    p.add_argument("--image-batch-size", type=int, default=64, help="latents per step (global)")
    p.add_argument("--image-weight", type=float, default=1.0, help="weight of the flow loss")
    p.add_argument("--caption-dropout", type=float, default=0.1, help="share of images trained uncaptioned")
    p.add_argument(
        "--text-weight", type=float, default=1.0, help="weight of the text/code loss (0: images only)"
    )
    p.add_argument(
        "--speech",
        default=None,
        help="joint text-to-speech training: a folder from `python -m arrowdiff.speech.build_data`; adds "
        "the audio head, the speaker conditioner and the voice model (reference encoder, durations)",
    )
    p.add_argument("--speech-batch-size", type=int, default=32, help="mel windows per step (global)")
    p.add_argument("--speech-weight", type=float, default=1.0, help="weight of the speech loss")
    p.add_argument(
        "--speaker-dropout", type=float, default=0.1, help="share of windows trained without a speaker"
    )
    p.add_argument(
        "--vocoder", default=None, help="vocoder model directory to ship inside the exported model"
    )
    p.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="train only heads and conditioners on a frozen backbone (R4.5: a new modality as a head)",
    )
    p.add_argument("--no-export", action="store_true", help="skip writing <out>/model at the end")
    p.add_argument("--export-bits", type=int, default=16, help="bit width of the exported model")
    return p


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (recorded in metadata.json)."""
    return shlex.join(["arrowdiff", "train", *args.argv])


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Warmup-stable-decay (Hu et al. 2024, MiniCPM): linear warmup, constant, linear decay to 10%."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    decay_start = int(args.steps * (1 - args.decay_frac))
    if step < decay_start:
        return args.lr
    frac = (step - decay_start) / max(1, args.steps - decay_start)
    return args.lr * (1 - 0.9 * frac)


def init_weights(model: UnifiedModel, path: str) -> None:
    """Copy every tensor of an exported model into ``model`` (strict: same architecture and vocabulary)."""
    from arrowdiff.loading import load_model

    source = load_model(path).model
    if source.cfg.backbone != model.cfg.backbone or source.cfg.text != model.cfg.text:
        raise ConfigError(
            f"--init-from {path}: its architecture differs from --preset; use the matching preset"
        )
    # heads and conditioners the source lacks (added by this run) keep their fresh initialisation
    new = {f"conditioners.{c}." for c in model.conditioners if c not in source.conditioners}
    new |= {f"heads.{m}." for m in model.heads if m not in source.heads}
    if model.voice is not None and source.voice is None:
        new.add("voice.")
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    if unexpected or any(not any(k.startswith(n) for n in new) for k in missing):
        raise ConfigError(f"--init-from {path}: tensors do not match (missing {missing}, extra {unexpected})")


def make_model_config(args: argparse.Namespace, vocab_size: int) -> ModelConfig:
    cfg = get_preset(args.preset, vocab_size)
    modalities, conditioners = tuple(cfg.modalities), ()
    schedule = replace(cfg.schedule, discrete=args.schedule)
    image = cfg.image
    if getattr(args, "memory", None):
        conditioners += ("memory",)
    if getattr(args, "images", None):
        val = LatentSet.load(args.images, "val")
        _, _, c, h, w = val.moments.shape
        image = replace(cfg.image, latent_channels=c, latent_size=h, downsample=val.downsample)
        modalities, conditioners = modalities + ("image",), conditioners + ("caption",)
        schedule = replace(schedule, continuous="flow")
    audio = cfg.audio
    if getattr(args, "speech", None):
        mean, std = SpeechWindows.load(args.speech, "val").mel_stats()
        audio = replace(cfg.audio, mel_mean=round(mean, 3), mel_std=round(std, 3))
        modalities, conditioners = modalities + ("audio",), conditioners + ("speaker",)
        schedule = replace(schedule, continuous="flow")
    return replace(
        cfg,
        objective=args.objective,
        schedule=schedule,
        modalities=modalities,
        conditioners=conditioners,
        image=image,
        audio=audio,
    )


@torch.no_grad()
def evaluate(
    model: UnifiedModel,
    windows: dict[str, torch.Tensor],
    args: argparse.Namespace,
    memory_sets: dict[str, MemorySet] | None = None,
    images: LatentSet | None = None,
    speech: SpeechWindows | None = None,
) -> dict[str, float]:
    """Validation loss per modality: NELBO (mdlm, fixed t grid) or next-token CE (ar), nats/token.

    With ``memory_sets`` (validation memories) also ``val_<m>_memory``: the same windows conditioned on
    memories of their document, so the gap to ``val_<m>`` is what memory guidance buys."""
    model.eval()
    schedule = get_mask_schedule(model.cfg.schedule.discrete)
    out = {}
    jobs = [(name, x, False) for name, x in windows.items()]
    jobs += [(name, windows[name], True) for name in (memory_sets or {}) if name in windows]
    for name, x, with_memory in jobs:
        total, n = 0.0, 0
        for i in range(0, len(x), 16):
            xb = x[i : i + 16].to(args.device)
            mem: dict[str, torch.Tensor] = {}
            if with_memory:
                starts = [(i + j) * x.shape[1] for j in range(len(xb))]
                gen = step_generator(args.seed, i, stream=8)
                m, mm = memory_batch(
                    memory_sets, starts, [name] * len(xb), x.shape[1], args.memory_k, 0.0, gen
                )
                mem = {"memory": m.to(args.device), "memory_mask": mm.to(args.device)}
            with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=args.bf16):
                if model.cfg.objective == "ar":
                    loss, _ = ar_loss(model, xb, name)
                else:
                    loss, _ = mdlm_loss(
                        model,
                        xb,
                        name,
                        schedule,
                        model.cfg.schedule.eps,
                        generator=step_generator(args.seed, i, stream=7),
                        **mem,
                    )
            total, n = total + loss.item() * len(xb), n + len(xb)
        out[f"val_{name}" + ("_memory" if with_memory else "")] = total / max(n, 1)
    if images is not None:
        out.update(evaluate_images(model, images, args))
    if speech is not None:
        out.update(evaluate_speech(model, speech, args))
    model.train()
    return out


@torch.no_grad()
def evaluate_images(model: UnifiedModel, images: LatentSet, args: argparse.Namespace) -> dict[str, float]:
    """Flow-matching MSE on validation latents (posterior means) over a fixed grid of 8 times, captioned
    (``val_image``) and uncaptioned (``val_image_uncond``): their gap is what the caption tells the model."""
    n = min(len(images), 256)
    z = torch.from_numpy(images.moments[:n, 0].astype("float32")) * images.scale_factor
    cap = torch.from_numpy(images.captions[:n, 0])[:, None, :]
    out = {}
    for key, mask in (("val_image", torch.ones(n, 1, dtype=torch.bool)), ("val_image_uncond", None)):
        total = 0.0
        for k, tv in enumerate(torch.linspace(0.05, 0.95, 8).tolist()):
            g = step_generator(args.seed, k, stream=9)
            for i in range(0, n, 64):
                zb = z[i : i + 64].to(args.device)
                t = torch.full((len(zb),), tv, device=args.device)
                c = None if mask is None else cap[i : i + 64].to(args.device)
                m = None if mask is None else mask[i : i + 64].to(args.device)
                with torch.autocast(zb.device.type, dtype=torch.bfloat16, enabled=args.bf16):
                    loss, _ = flow_loss(model, zb, "image", g, caption=c, caption_mask=m, t=t)
                total += loss.item() * len(zb)
        out[key] = total / (8 * n)
    model.train()
    return out


def train(args: argparse.Namespace) -> Path:
    """Run (or resume) training; returns the run directory."""
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if ddp:
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        if args.device.startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.batch_size % world:
        raise ConfigError(f"--batch-size {args.batch_size} must be divisible by the {world} ranks")
    out = Path(args.out)
    data = Path(args.data)
    manifest = load_manifest(data)
    tok_path = Path(args.tokenizer) if args.tokenizer else data.parent / "tokenizer.json"
    cfg = make_model_config(args, int(manifest["vocab_size"]))
    torch.manual_seed(args.seed)  # identical initial weights on every rank
    model = UnifiedModel(cfg).to(args.device)
    if args.freeze_backbone:
        model.backbone.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    start_step, tokens_seen, elapsed = 0, 0, 0.0
    if args.init_from and not (args.resume and (out / "checkpoint" / "state.json").exists()):
        init_weights(model, args.init_from)
    if args.resume and (out / "checkpoint" / "state.json").exists():
        state = load_checkpoint(out / "checkpoint", model, opt)
        start_step, tokens_seen, elapsed = state["step"], state["tokens_seen"], state["elapsed_s"]
    fwd_model: Any = model
    if args.compile:
        fwd_model = torch.compile(model)
    if ddp:
        fwd_model = torch.nn.parallel.DistributedDataParallel(fwd_model, find_unused_parameters=True)
    sampler = ShardSampler(
        open_shard(data, "train", "text"),
        open_shard(data, "train", "code"),
        args.seq_len + (1 if args.objective == "ar" else 0),
        args.code_frac,
    )
    val = {
        m: fixed_windows(
            open_shard(data, "val", m), args.seq_len + (args.objective == "ar"), args.eval_windows
        )
        for m in ("text", "code")
    }
    schedule = get_mask_schedule(args.schedule)
    memory_sets: dict[str, MemorySet] = {}
    val_memory: dict[str, MemorySet] | None = None
    if args.memory:
        eot = int(manifest["special_ids"]["eot"])
        memory_sets = {"text": MemorySet.load(args.memory, "train", "text", sampler.text, eot)}
        val_memory = {
            "text": MemorySet.load(args.memory, "val", "text", open_shard(data, "val", "text"), eot)
        }
    images = LatentSet.load(args.images, "train") if args.images else None
    val_images = LatentSet.load(args.images, "val") if args.images else None
    speech = SpeechWindows.load(args.speech, "train", args.device) if args.speech else None
    val_speech = SpeechWindows.load(args.speech, "val", args.device) if args.speech else None
    if speech is not None and ddp:
        raise ConfigError("--speech trains the voice model outside DDP's forward: run it on one process")
    local_bs = args.batch_size // world
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    log = (out / "log.jsonl").open("a") if rank == 0 else None
    if rank == 0:
        (out / "command.txt").write_text(command_line(args) + "\n")
    bar = tqdm(
        range(start_step, args.steps),
        initial=start_step,
        total=args.steps,
        disable=rank != 0,
        desc=f"train {args.objective}/{args.preset}",
        dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    step = start_step - 1  # the last step done, also when resuming a run that has already finished
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        gen = step_generator(args.seed, step, rank)
        x0, names, starts = sampler.batch(local_bs, gen)
        x0 = x0.to(args.device)
        mem: dict[str, torch.Tensor] = {}
        if memory_sets:
            m, mm = memory_batch(
                memory_sets, starts, names, x0.shape[1], args.memory_k, args.cond_dropout, gen
            )
            mem = {"memory": m.to(args.device), "memory_mask": mm.to(args.device)}
        with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            if args.text_weight == 0:
                loss, stats = torch.zeros((), device=x0.device), {}
            elif args.objective == "ar":
                loss, stats = ar_loss(fwd_model, x0, names)
            else:
                loss, stats = mdlm_loss(
                    fwd_model, x0, names, schedule, cfg.schedule.eps, gen, mask_id=cfg.text.mask_id, **mem
                )
        if images is not None:
            z, cap, keep = images.batch(args.image_batch_size // world, gen, args.caption_dropout)
            with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=args.bf16):
                img_loss, img_stats = flow_loss(
                    fwd_model, z.to(args.device), "image", gen, cap.to(args.device), keep.to(args.device)
                )
            loss = args.text_weight * loss + args.image_weight * img_loss
            stats.update(img_stats)
        if speech is not None:
            sb = speech.batch(
                args.speech_batch_size, cfg.audio.crop_frames, cfg.voice.reference_frames, gen,
                args.speaker_dropout,
            )  # fmt: skip
            with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=args.bf16):
                sp_loss, sp_stats = speech_loss(model, sb, gen)
            loss = loss + args.speech_weight * sp_loss
            stats.update(sp_stats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        tokens_seen += args.batch_size * args.seq_len
        if rank == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr_at(step, args):.1e}")
            rec = {
                "step": step + 1,
                "loss": loss.item(),
                "grad_norm": float(gnorm),
                **stats,
                "elapsed_s": round(elapsed + time.perf_counter() - t0, 3),
            }
            if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
                rec.update(evaluate(model, val, args, val_memory, val_images, val_speech))
                tqdm.write(json.dumps(rec))
            log.write(json.dumps(rec) + "\n")
            stopping = args.stop_at and step + 1 >= args.stop_at
            if (step + 1) % args.ckpt_every == 0 or step + 1 == args.steps or stopping:
                log.flush()
                state = {
                    "step": step + 1,
                    "tokens_seen": tokens_seen,
                    "config": cfg.to_dict(),
                    "elapsed_s": elapsed + time.perf_counter() - t0,
                    "args": vars(args),
                }
                save_checkpoint(out / "checkpoint", model, opt, state)
        if args.stop_at and step + 1 >= args.stop_at:
            break
    finished = step + 1 >= args.steps
    if rank == 0:
        log.close()
        if finished and not args.no_export:
            from arrowdiff.training.export import export_run

            if speech is not None:
                builtin_voices(model, speech)
                cfg = model.cfg
            export_run(
                out, model, cfg, tok_path, manifest, args, tokens_seen, elapsed + time.perf_counter() - t0
            )
    if ddp:
        dist.destroy_process_group()
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    if args.steps < 1 or math.isnan(args.lr):
        raise ConfigError(f"--steps {args.steps} must be >= 1")
    if (args.memory or args.images or args.speech) and args.objective != "mdlm":
        raise ConfigError("--memory, --images and --speech train diffusion: use them with --objective mdlm")
    if args.text_weight == 0 and not (args.images or args.speech):
        raise ConfigError("--text-weight 0 leaves nothing to train: add --images or --speech")
    if args.speech and (args.speech_batch_size < 1 or not 0.0 <= args.speaker_dropout < 1.0):
        raise ConfigError(
            f"--speech-batch-size {args.speech_batch_size} must be >= 1 and --speaker-dropout "
            f"{args.speaker_dropout} in [0, 1)"
        )
    if args.images and (args.image_batch_size < 1 or not 0.0 <= args.caption_dropout < 1.0):
        raise ConfigError(
            f"--image-batch-size {args.image_batch_size} must be >= 1 and --caption-dropout "
            f"{args.caption_dropout} in [0, 1)"
        )
    if not 1 <= args.memory_k <= 64 or not 0.0 <= args.cond_dropout < 1.0:
        raise ConfigError(
            f"--memory-k {args.memory_k} must be in [1, 64] and --cond-dropout {args.cond_dropout} in [0, 1)"
        )
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
