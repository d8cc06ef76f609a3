"""Train the mel prior of shallow diffusion: ``python -m arrowdiff.speech.train_prior --data data/speech
--model src/arrowdiff/pretrained/default --out runs/prior``.

The prior (:mod:`arrowdiff.speech.prior`) learns the normalised log-mel of whole training utterances from
their phones, durations and speaker embedding, with an L1 loss on the real frames (FastSpeech 2). The
speaker embeddings come from ``--model``'s own reference encoder and voice table, frozen, so the prior
fits that model's voices and its cloning path. Runs on a 2-core CPU in tens of minutes.
Batches are pure functions of (seed, step); ``--resume`` continues exactly from ``<out>/checkpoint``
(safetensors + JSON, atomic; no pickle). ``--stop-at N`` pauses after step N (resume later).

    <out>/checkpoint/   prior and AdamW moments, state.json
    <out>/log.jsonl     loss and lr every --log-every steps; val L1 every --eval-every steps
    <out>/model/        metadata.json + prior.parquet (attach it with python -m arrowdiff.weights.attach)
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

import torch
from tqdm import tqdm

from arrowdiff.errors import ArrowDiffError, ConfigError
from arrowdiff.speech.prior import MelPrior, MelPriorConfig
from arrowdiff.speech.prior_data import PriorBatch, PriorData
from arrowdiff.speech.prior_io import save_prior

PROG = "python -m arrowdiff.speech.train_prior"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("data/speech"), help="speech folder (build_data)")
    p.add_argument("--model", default=None, help="unified model whose voice model gives the speakers")
    p.add_argument("--out", type=Path, default=Path("runs/prior"))
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=16, help="utterances per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=int, default=MelPriorConfig.channels)
    p.add_argument("--decoder-layers", type=int, default=MelPriorConfig.decoder_layers)
    p.add_argument("--max-frames", type=int, default=512, help="utterances are cut to this many frames")
    p.add_argument("--table-p", type=float, default=0.5, help="share of rows given the built-in voice")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument(
        "--export-bits",
        type=int,
        default=16,
        help="bits of the exported weights (16: integer groups run along a conv kernel's last axis, "
        "which pads k=5 to the group size, so 8 bits would be larger here; 32 = lossless)",
    )
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-at", type=int, default=0, help="pause after this step (0 = run to --steps)")
    return p


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warmup, then cosine decay to 10%."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, frac))))


def prior_loss(prior: MelPrior, b: PriorBatch) -> torch.Tensor:
    """Mean absolute error of the predicted normalised log-mel over the real frames."""
    pred = prior(b.phones, b.durations, b.speaker, b.mel.shape[1])
    err = (pred - b.mel).abs().mean(-1)
    return (err * b.mask).sum() / b.mask.sum().clamp_min(1)


@torch.no_grad()
def evaluate(prior: MelPrior, val: PriorData, rows: int = 64) -> float:
    prior.eval()
    g = torch.Generator().manual_seed(0)
    idx = list(range(min(rows, len(val))))
    total = 0.0
    for i in range(0, len(idx), 16):
        chunk = idx[i : i + 16]
        total += float(prior_loss(prior, val.batch(chunk, g, table_p=1.0))) * len(chunk)
    prior.train()
    return total / len(idx)


def train(args: argparse.Namespace) -> Path:
    from arrowdiff.loading import load_model, resolve_model_path
    from arrowdiff.training.batches import step_generator
    from arrowdiff.training.checkpoint import load_checkpoint, save_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = resolve_model_path(args.model)
    unified = load_model(model_path).model
    if unified.voice is None:
        raise ConfigError(f"{model_path} has no voice model: train it with --speech first")
    print(f"embedding speakers of {args.data} with {model_path}'s reference encoder ...")
    train_set = PriorData(args.data, "train", unified, args.max_frames)
    val = PriorData(args.data, "val", unified, args.max_frames)
    audio = unified.cfg.audio
    cfg = MelPriorConfig(
        n_mels=audio.n_mels,
        num_phones=audio.num_phones,
        embed_dim=unified.cfg.voice.embed_dim,
        frames_per_token=audio.frames_per_token,
        channels=args.channels,
        decoder_layers=args.decoder_layers,
    )
    torch.manual_seed(args.seed)
    prior = MelPrior(cfg)
    opt = torch.optim.AdamW(prior.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    ckpt, start, elapsed = out / "checkpoint", 0, 0.0
    if args.resume:
        state = load_checkpoint(ckpt, prior, opt)
        start, elapsed = int(state["step"]), float(state["elapsed_s"])
        print(f"resumed at step {start}")
    (out / "command.txt").write_text(shlex.join(["python", "-m", "arrowdiff.speech.train_prior", *args.argv]))
    log = open(out / "log.jsonl", "a", encoding="utf-8")
    t0, prior_val = time.perf_counter(), None
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="prior", mininterval=5)
    running = 0.0
    prior.train()
    for step in bar:
        lr = lr_at(step, args)
        for group in opt.param_groups:
            group["lr"] = lr
        g = step_generator(args.seed, step)
        torch.manual_seed(step_generator(args.seed, step, stream=1).initial_seed())  # dropout
        rows = torch.randint(0, len(train_set), (args.batch_size,), generator=g).numpy()
        loss = prior_loss(prior, train_set.batch(rows, g, args.table_p))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = float(torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0))
        opt.step()
        running += float(loss.detach())
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            rec: dict[str, Any] = {"step": done, "l1": running / args.log_every, "grad_norm": grad, "lr": lr}
            running = 0.0
            if done % args.eval_every == 0 or done == args.steps:
                prior_val = rec["val_l1"] = evaluate(prior, val)
            rec["elapsed_s"] = round(elapsed + time.perf_counter() - t0, 1)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(l1=f"{rec['l1']:.3f}", val=f"{prior_val or float('nan'):.3f}")
        stopping = bool(args.stop_at) and done >= args.stop_at
        if done % args.ckpt_every == 0 or done == args.steps or stopping:
            state = {"step": done, "elapsed_s": elapsed + time.perf_counter() - t0, "config": cfg.to_dict()}
            save_checkpoint(ckpt, prior, opt, {**state, "args": {k: str(v) for k, v in vars(args).items()}})
        if stopping:
            break
    log.close()
    wall = elapsed + time.perf_counter() - t0
    if start < args.steps and (not args.stop_at or args.stop_at >= args.steps):
        final = evaluate(prior, val)
        utts = (Path(args.data) / "train_utts.parquet").read_bytes()
        voice_sha = hashlib.sha256(
            b"".join(t.detach().float().numpy().tobytes() for t in unified.voice.state_dict().values())
        ).hexdigest()
        record = {
            "training": {
                "command": shlex.join(["python", "-m", "arrowdiff.speech.train_prior", *args.argv]),
                "steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "seed": args.seed,
                "loss": "L1 on normalised log-mel",
                "val_l1": final,
                "wall_time_s": round(wall, 1),
                "torch": torch.__version__,
                "data": {"folder": str(args.data), "train_utts_sha256": hashlib.sha256(utts).hexdigest()},
            },
            "speaker_encoder": {"model": str(model_path), "voice_sha256": voice_sha},
        }
        save_prior(prior, out / "model", record, bits=args.export_bits)
        print(f"exported {out / 'model'} ({prior.num_parameters():,} parameters): val L1 {final:.4f}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    try:
        for name in ("steps", "batch_size", "log_every", "eval_every", "ckpt_every", "max_frames"):
            if getattr(args, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")
        if not 0.0 <= args.table_p <= 1.0:
            raise ConfigError(f"--table-p {args.table_p} must be in [0, 1]")
        train(args)
    except ArrowDiffError as e:
        print(f"arrowdiff.speech.train_prior: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
