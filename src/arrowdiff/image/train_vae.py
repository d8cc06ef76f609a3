"""Train the image VAE: ``python -m arrowdiff.image.train_vae --data data/images --out runs/vae``.

The same command runs on a 2-core CPU (``--threads 1``) and on a GPU (``--device cuda [--bf16]``); the
whole training split is held in memory (on the GPU too), so ``--data`` is one self-contained folder
(``python -m arrowdiff.image.dataset build``). Batches are pure functions of (seed, step), so
``--resume`` continues exactly from ``<out>/checkpoint`` (safetensors + JSON, written atomically).
At the end it sets ``scale_factor`` (1/std of the latents over the training set, as in LDM) and
exports ``<out>/model``, a model directory with a ``vae`` component (load it with ``load_vae``).

    <out>/checkpoint/   model + optimizer (safetensors), state.json
    <out>/log.jsonl     one JSON record per step; validation SSIM/PSNR every --eval-every steps
    <out>/command.txt   the command that reproduces the run
    <out>/model/        metadata.json + vae.parquet
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from arrowdiff.errors import ArrowDiffError, ConfigError
from arrowdiff.image.metrics import mean_finite, psnr, ssim
from arrowdiff.image.shards import load_manifest, open_images
from arrowdiff.image.vae import VAE, VAEConfig, tensor_to_uint8
from arrowdiff.image.vae_io import save_vae
from arrowdiff.image.vae_loss import VAELossWeights, vae_loss


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m arrowdiff.image.train_vae", description=__doc__.split("\n")[0]
    )
    p.add_argument("--data", default="data/images", help="image shard folder (manifest.json, *_images.npy)")
    p.add_argument("--out", required=True, help="run directory: checkpoint/, log.jsonl, model/")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--crop", type=int, default=0, help="train on random square crops of this side (0 = whole)"
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", default="32,64,96,128", help="VAE widths per level, full resolution first")
    p.add_argument("--encoder-blocks", default="1,1,1,2")
    p.add_argument("--decoder-blocks", default="1,1,2,2")
    p.add_argument("--latent-channels", type=int, default=4)
    p.add_argument("--norm-groups", type=int, default=0, help="GroupNorm groups (0 = none)")
    p.add_argument("--l1-weight", type=float, default=1.0)
    p.add_argument("--l2-weight", type=float, default=0.0)
    p.add_argument("--ssim-weight", type=float, default=0.5)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--no-hflip", action="store_true", help="do not mirror half of each batch")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-images", type=int, default=256, help="validation images scored (0 = all)")
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--scale-images", type=int, default=2048, help="training images used for scale_factor")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU, or CPUs with bf16 support)")
    p.add_argument("--compile", action="store_true", help="torch.compile the VAE (GPU)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint")
    p.add_argument("--stop-at", type=int, default=0, help="checkpoint and stop at this step; resume later")
    p.add_argument("--no-export", action="store_true", help="skip writing <out>/model at the end")
    p.add_argument("--export-bits", type=int, default=16, help="bit width of the exported weights")
    return p


def vae_config(args: argparse.Namespace) -> VAEConfig:
    """The VAEConfig the flags describe."""
    return VAEConfig(
        latent_channels=args.latent_channels,
        channels=_ints(args.channels),
        encoder_blocks=_ints(args.encoder_blocks),
        decoder_blocks=_ints(args.decoder_blocks),
        norm_groups=args.norm_groups,
    )


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warmup, then cosine decay to 10% of --lr."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The CPU generator of one step: a pure function of (seed, step, stream), so resumed runs match."""
    digest = hashlib.sha256(f"{seed}:{step}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def make_batch(
    images: torch.Tensor, batch_size: int, crop: int, hflip: bool, gen: torch.Generator
) -> torch.Tensor:
    """A (B, 3, h, w) float batch in [-1, 1] drawn from uint8 ``images`` (N, H, W, 3) on any device."""
    n, h, w, _ = images.shape
    idx = torch.randint(n, (batch_size,), generator=gen)
    x = images[idx.to(images.device)]
    if crop:
        top = int(torch.randint(h - crop + 1, (1,), generator=gen))
        left = int(torch.randint(w - crop + 1, (1,), generator=gen))
        x = x[:, top : top + crop, left : left + crop]
    x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if hflip:
        flip = (torch.rand(batch_size, generator=gen) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


@torch.no_grad()
def reconstruct(vae: VAE, images: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 reconstructions through the posterior mean."""
    out = []
    for i in range(0, len(images), batch_size):
        mean, _ = vae.encode(images[i : i + batch_size])
        out.append(tensor_to_uint8(vae.decode(mean)))
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 3), np.uint8)


@torch.no_grad()
def evaluate(vae: VAE, images: np.ndarray) -> dict[str, float]:
    """Validation SSIM (RGB mean) and PSNR (dB) of posterior-mean reconstructions, on uint8 images."""
    was_training = vae.training
    vae.eval()
    rec = reconstruct(vae, images)
    vae.train(was_training)
    return {"val_ssim": float(ssim(images, rec).mean()), "val_psnr": mean_finite(psnr(images, rec))}


@torch.no_grad()
def latent_scale(vae: VAE, images: torch.Tensor, n: int, seed: int, batch_size: int = 128) -> float:
    """1 / std of posterior samples z over ``n`` evenly spaced training images (LDM's scale factor)."""
    vae.eval()
    pick = torch.linspace(0, len(images) - 1, min(n, len(images))).long()
    gen = step_generator(seed, 0, stream=3)
    total, total_sq, count = 0.0, 0.0, 0
    for i in range(0, len(pick), batch_size):
        mean, logvar = vae.encode(images[pick[i : i + batch_size].to(images.device)].cpu())
        z = vae.sample(mean, logvar, gen).double()
        total, total_sq, count = total + z.sum().item(), total_sq + z.pow(2).sum().item(), count + z.numel()
    var = total_sq / count - (total / count) ** 2
    return 1.0 / math.sqrt(max(var, 1e-12))


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (recorded in metadata.json)."""
    return shlex.join(["python", "-m", "arrowdiff.image.train_vae", *args.argv])


def training_record(
    args: argparse.Namespace, manifest: dict[str, Any], wall_s: float, final: dict[str, float], scale: float
) -> dict[str, Any]:
    """metadata.json ``training``: how this VAE was made (R15)."""
    return {
        "command": command_line(args),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "crop": args.crop,
        "seed": args.seed,
        "lr": args.lr,
        "loss_weights": {
            "l1": args.l1_weight,
            "l2": args.l2_weight,
            "ssim": args.ssim_weight,
            "kl": args.kl_weight,
        },
        "hflip": not args.no_hflip,
        "device": args.device,
        "bf16": args.bf16,
        "threads": args.threads,
        "torch": torch.__version__,
        "wall_time_s": round(wall_s, 1),
        "final_eval": final,
        "scale_factor": scale,
        "data": {
            "recipe": manifest.get("command") or "python -m arrowdiff.image.dataset build",
            "size": manifest.get("size"),
            "sources": manifest.get("sources"),
            "packages": {k: v.get("npm") for k, v in manifest.get("packages", {}).items()},
            "counts": {k: v.get("count") for k, v in manifest.get("splits", {}).items()},
            "images_sha256": {k: v["images"].get("sha256") for k, v in manifest.get("splits", {}).items()},
            "manifest_sha256": hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest(),
        },
    }


def train(args: argparse.Namespace) -> Path:
    """Run (or resume) VAE training; returns the run directory."""
    from arrowdiff.training.checkpoint import load_checkpoint, save_checkpoint  # training code: lazy

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg = vae_config(args)
    weights = VAELossWeights(args.l1_weight, args.l2_weight, args.ssim_weight, args.kl_weight)
    data, out = Path(args.data), Path(args.out)
    manifest = load_manifest(data)
    train_np = open_images(data, "train")
    size = train_np.shape[1]
    if args.crop and (args.crop > size or args.crop % cfg.downsample):
        raise ConfigError(
            f"--crop {args.crop} must be a multiple of {cfg.downsample} and <= the image size {size}"
        )
    VAE(cfg).check_size(*train_np.shape[1:3])
    train_images = torch.from_numpy(np.array(train_np)).to(args.device)  # (N, H, W, 3) uint8
    val_np = open_images(data, "val")
    if args.eval_images and len(val_np) > args.eval_images:
        val_np = val_np[np.linspace(0, len(val_np) - 1, args.eval_images).astype(int)]
    val_np = np.array(val_np)

    torch.manual_seed(args.seed)
    vae = VAE(cfg).to(args.device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    start, elapsed = 0, 0.0
    ckpt = out / "checkpoint"
    if args.resume and (ckpt / "state.json").exists():
        state = load_checkpoint(ckpt, vae, opt)
        if state.get("config") != cfg.to_dict():
            raise ConfigError(f"--resume: {ckpt} was trained with {state.get('config')}, not {cfg.to_dict()}")
        start, elapsed = int(state["step"]), float(state["elapsed_s"])
    fwd: Any = torch.compile(vae) if args.compile else vae
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text(command_line(args) + "\n")
    log = (out / "log.jsonl").open("a")
    bar = tqdm(
        range(start, args.steps), initial=start, total=args.steps, desc="train vae", dynamic_ncols=True
    )
    t0 = time.perf_counter()
    step = start - 1
    final: dict[str, float] = {}
    vae.train()
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        gen = step_generator(args.seed, step)
        x = make_batch(train_images, args.batch_size, args.crop, not args.no_hflip, gen)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss, stats = vae_loss(fwd, x, weights, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_at(step, args):.1e}")
        rec = {
            "step": step + 1,
            "loss": loss.item(),
            **stats,
            "grad_norm": float(gnorm),
            "lr": lr_at(step, args),
        }
        rec["elapsed_s"] = round(elapsed + time.perf_counter() - t0, 3)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            final = evaluate(vae, val_np)
            rec.update(final)
            tqdm.write(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in rec.items()}))
        log.write(json.dumps(rec) + "\n")
        stopping = bool(args.stop_at) and step + 1 >= args.stop_at
        if (step + 1) % args.ckpt_every == 0 or step + 1 == args.steps or stopping:
            log.flush()
            state = {
                "step": step + 1,
                "elapsed_s": elapsed + time.perf_counter() - t0,
                "config": cfg.to_dict(),
            }
            save_checkpoint(ckpt, vae, opt, {**state, "args": dict(vars(args))})
        if stopping:
            break
    log.close()
    wall = elapsed + time.perf_counter() - t0
    if step + 1 >= args.steps and not args.no_export:
        if not final:
            final = evaluate(vae, val_np)
        scale = latent_scale(vae, train_images, args.scale_images, args.seed)
        vae.scale_factor.fill_(scale)
        save_vae(
            vae.float().cpu(),
            out / "model",
            training_record(args, manifest, wall, final, scale),
            args.export_bits,
        )
        print(f"exported {out / 'model'}: scale_factor={scale:.4f}, val SSIM {final['val_ssim']:.4f}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    try:
        if args.steps < 1 or args.batch_size < 1:
            raise ConfigError(f"--steps {args.steps} and --batch-size {args.batch_size} must be >= 1")
        train(args)
    except ArrowDiffError as e:
        print(f"arrowdiff.image.train_vae: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
