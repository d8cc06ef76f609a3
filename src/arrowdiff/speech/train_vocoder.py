"""Train the vocoder: ``python -m arrowdiff.speech.train_vocoder --data data/speech --out runs/vocoder``.

The same command runs on a 2-core CPU (``--threads 1``) and on a GPU (``--device cuda [--bf16]``). The
whole training split is held as one int16 tensor on the device and every batch is a gather of random
hop-aligned ``--segment``-sample crops; the log-mel input is computed on the device from the crop
(:func:`arrowdiff.speech.mel.log_mel`), so no per-step host work remains but a few random integers.
Batches are pure functions of (seed, step), so ``--resume`` continues exactly from ``<out>/checkpoint``
(safetensors for weights and AdamW moments + JSON, written atomically; no pickle).

Fine-tuning: ``--init MODEL`` starts from a model directory's vocoder; ``--predicted-mel-p P`` feeds a
share P of the rows the unified model's own predicted mels of the same crops
(:mod:`arrowdiff.speech.predicted_mels`, HiFi-GAN's fine-tuning), while the loss still compares the output
with the real audio.

Loss: 45 x mel L1 + 2.5 x multi-resolution STFT loss (:mod:`arrowdiff.speech.vocoder_loss`); with ``--gan``
a multi-resolution discriminator joins at step ``--gan-start`` (hinge + feature matching, Vocos-style).
Validation every ``--eval-every`` steps scores the vocoder on ``val`` utterances (mel L1, spectral
convergence, log-STFT L1) and, once per run, Griffin-Lim on the same utterances: the baseline sits in the
same log. At the end ``<out>/model`` is exported (``load_vocoder``) and a few listening samples written.

    <out>/checkpoint/   vocoder (+ discriminator) and optimizer (safetensors), state.json
    <out>/log.jsonl     one JSON record every --log-every steps (elapsed_s, losses, lr); validation metrics
    <out>/command.txt   the command that reproduces the run
    <out>/model/        metadata.json + vocoder.parquet
    <out>/samples/      <i>_reference.wav, <i>_vocoder.wav, <i>_griffin_lim.wav (16-bit PCM)
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
from torch import Tensor, nn

from arrowdiff.errors import ArrowDiffError, ConfigError
from arrowdiff.speech.discriminator import MultiResolutionDiscriminator
from arrowdiff.speech.griffin_lim import griffin_lim
from arrowdiff.speech.mel import MelConfig, log_mel
from arrowdiff.speech.vocoder import Vocoder, VocoderConfig
from arrowdiff.speech.vocoder_data import (
    PredictedMels,
    SegmentSampler,
    load_wave_split,
    read_manifest,
    split_exists,
)
from arrowdiff.speech.vocoder_io import load_vocoder, save_vocoder
from arrowdiff.speech.vocoder_loss import (
    VocoderLossWeights,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
    multi_resolution_stft_loss,
    reconstruction_loss,
)
from arrowdiff.speech.wav import write_wav

PROG = "python -m arrowdiff.speech.train_vocoder"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/speech", help="speech folder (train/val _utts.parquet, _wave.npy)")
    p.add_argument("--out", required=True, help="run directory: checkpoint/, log.jsonl, model/")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--segment", type=int, default=16_384, help="training crop in samples (multiple of 256)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=10.0, help="max gradient norm (0 = no clipping)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=384, help="ConvNeXt width")
    p.add_argument("--intermediate", type=int, default=1152, help="ConvNeXt MLP width")
    p.add_argument("--layers", type=int, default=8, help="ConvNeXt blocks")
    p.add_argument("--mel-weight", type=float, default=45.0)
    p.add_argument("--stft-weight", type=float, default=2.5)
    p.add_argument("--gan", action="store_true", help="add the multi-resolution discriminator (hinge + FM)")
    p.add_argument("--gan-start", type=int, default=0, help="step at which the adversarial loss starts")
    p.add_argument("--disc-channels", type=int, default=32, help="discriminator width (UnivNet: 32)")
    p.add_argument("--adv-weight", type=float, default=1.0)
    p.add_argument("--fm-weight", type=float, default=2.0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-utts", type=int, default=64, help="validation utterances scored (0 = all)")
    p.add_argument("--eval-seconds", type=float, default=6.0, help="first seconds of each one scored")
    p.add_argument("--gl-iters", type=int, default=32, help="Griffin-Lim iterations of the baseline")
    p.add_argument("--samples", type=int, default=4, help="listening samples written at the end")
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU, or CPUs with bf16 support)")
    p.add_argument("--compile", action="store_true", help="torch.compile the vocoder for training (GPU)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument(
        "--predicted-mel-p",
        type=float,
        default=0.0,
        help="share of batch rows whose input is the model's predicted mel (<data>/train_predicted_mel.npy)",
    )
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint")
    p.add_argument(
        "--init", default=None, help="start from this model directory's vocoder (fine-tune; same --dim etc.)"
    )
    p.add_argument("--stop-at", type=int, default=0, help="checkpoint and stop at this step; resume later")
    p.add_argument("--no-export", action="store_true", help="skip writing <out>/model at the end")
    p.add_argument("--export-bits", type=int, default=16, help="bit width of the exported weights")
    return p


def vocoder_config(args: argparse.Namespace) -> VocoderConfig:
    """The VocoderConfig the flags describe."""
    return VocoderConfig(dim=args.dim, intermediate=args.intermediate, layers=args.layers)


def loss_weights(args: argparse.Namespace) -> VocoderLossWeights:
    return VocoderLossWeights(args.mel_weight, args.stft_weight, args.adv_weight, args.fm_weight)


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warmup, then cosine decay to 10% of --lr (as train_vae)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def eval_waves(data: Path, n: int, seconds: float, cfg: MelConfig, device: str) -> list[Tensor]:
    """Up to ``n`` evenly spaced ``val`` utterances (0 = all), each cut to its first ``seconds`` and to a
    multiple of the hop (the vocoder's output length), as float32 tensors on ``device``."""
    split = load_wave_split(data, "val")
    pick = (
        np.arange(len(split)) if not n or n >= len(split) else np.linspace(0, len(split) - 1, n).astype(int)
    )
    limit = int(seconds * cfg.sample_rate) // cfg.hop * cfg.hop
    out = []
    for i in pick:
        w = split.utterance(int(i))[:limit]
        w = w[: len(w) // cfg.hop * cfg.hop]
        if len(w) >= cfg.n_fft:
            out.append(torch.from_numpy(np.ascontiguousarray(w)).to(device))
    if not out:
        raise ConfigError(f"{data}: no val utterance is at least {cfg.n_fft} samples long; rebuild the data")
    return out


def score(pred: Tensor, ref: Tensor, cfg: MelConfig) -> dict[str, float]:
    """Mel L1, spectral convergence and log-STFT L1 of one (N,) prediction against its reference."""
    sc, mag = multi_resolution_stft_loss(pred[None], ref[None])
    mel = (log_mel(pred, cfg) - log_mel(ref, cfg)).abs().mean()
    return {"mel_l1": float(mel), "stft_sc": float(sc), "stft_mag": float(mag)}


def mean_scores(scores: list[dict[str, float]], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{k}": float(np.mean([s[k] for s in scores])) for k in scores[0]}


@torch.no_grad()
def evaluate(vocoder: Vocoder, waves: list[Tensor], cfg: MelConfig) -> dict[str, float]:
    """The vocoder's mean scores over ``waves`` (re-synthesised from their own mels), as ``val_*``."""
    was_training = vocoder.training
    vocoder.eval()
    scores = [score(vocoder(log_mel(w, cfg)[None])[0], w, cfg) for w in waves]
    vocoder.train(was_training)
    return mean_scores(scores, "val")


@torch.no_grad()
def evaluate_griffin_lim(waves: list[Tensor], cfg: MelConfig, iters: int) -> dict[str, float]:
    """Griffin-Lim's mean scores over the same ``waves``, as ``gl_*`` (the no-training baseline)."""
    return mean_scores([score(griffin_lim(log_mel(w, cfg), cfg, iters), w, cfg) for w in waves], "gl")


@torch.no_grad()
def write_samples(vocoder: Vocoder, waves: list[Tensor], out: Path, cfg: MelConfig, gl_iters: int) -> None:
    """Reference, vocoder and Griffin-Lim renderings of the first validation utterances."""
    out.mkdir(parents=True, exist_ok=True)
    vocoder.eval()
    for i, w in enumerate(waves):
        mel = log_mel(w, cfg)
        write_wav(out / f"{i}_reference.wav", w.cpu().numpy(), cfg.sample_rate)
        write_wav(out / f"{i}_vocoder.wav", vocoder(mel[None])[0].cpu().numpy(), cfg.sample_rate)
        write_wav(
            out / f"{i}_griffin_lim.wav", griffin_lim(mel, cfg, gl_iters).cpu().numpy(), cfg.sample_rate
        )


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (recorded in metadata.json)."""
    return shlex.join(["python", "-m", "arrowdiff.speech.train_vocoder", *args.argv])


def data_record(data: Path) -> dict[str, Any]:
    """Provenance of the speech folder: recipe, utterances and seconds per split, index checksums."""
    manifest = read_manifest(data)
    splits: dict[str, Any] = {}
    for name in ("train", "val", "heldout"):
        if split_exists(data, name):
            s = load_wave_split(data, name)
            utts = (data / f"{name}_utts.parquet").read_bytes()
            splits[name] = {
                "utterances": len(s),
                "seconds": round(s.seconds, 1),
                "utts_sha256": hashlib.sha256(utts).hexdigest(),
            }
    return {"recipe": manifest.get("command") or "python -m arrowdiff.speech.build_data", "splits": splits}


def training_record(
    args: argparse.Namespace, data: dict[str, Any], wall_s: float, final: dict[str, float]
) -> dict[str, Any]:
    """The vocoder metadata's ``training``: how this vocoder was made (R15)."""
    return {
        "command": command_line(args),
        "init": str(args.init) if args.init else None,
        "predicted_mel_p": args.predicted_mel_p,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "segment": args.segment,
        "seed": args.seed,
        "lr": args.lr,
        "warmup": args.warmup,
        "loss_weights": {
            "mel": args.mel_weight,
            "stft": args.stft_weight,
            **({"adv": args.adv_weight, "fm": args.fm_weight} if args.gan else {}),
        },
        "gan": {"discriminator": "UnivNet MRD", "channels": args.disc_channels, "start": args.gan_start}
        if args.gan
        else None,
        "device": args.device,
        "bf16": args.bf16,
        "torch": torch.__version__,
        "wall_time_s": round(wall_s, 1),
        "final_eval": final,
        "data": data,
    }


class Trainer(nn.Module):
    """The modules one checkpoint holds: ``vocoder`` and, with ``--gan``, ``disc``."""

    def __init__(self, cfg: VocoderConfig, gan: bool, disc_channels: int = 32) -> None:
        super().__init__()
        self.vocoder = Vocoder(cfg)
        self.disc = MultiResolutionDiscriminator(channels=disc_channels) if gan else None


def init_vocoder(vocoder: Vocoder, path: Path, cfg: VocoderConfig) -> None:
    """Copy the vocoder of model directory ``path`` into ``vocoder`` (``--init``: fine-tuning)."""
    source = load_vocoder(path)
    if source.cfg.to_dict() != cfg.to_dict():
        raise ConfigError(
            f"--init {path}: its vocoder is {source.cfg.to_dict()}, this run builds {cfg.to_dict()}; "
            "pass the same --dim/--intermediate/--layers"
        )
    with torch.no_grad():
        for name, p in vocoder.state_dict().items():
            p.copy_(source.state_dict()[name].to(p.device, p.dtype))


def train(args: argparse.Namespace) -> Path:
    """Run (or resume) vocoder training; returns the run directory."""
    from arrowdiff.training.batches import step_generator  # training code: lazy
    from arrowdiff.training.checkpoint import load_checkpoint, save_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg = vocoder_config(args)
    mel_cfg = cfg.mel_config()
    weights = loss_weights(args)
    data, out = Path(args.data), Path(args.out)
    manifest_mel = read_manifest(data).get("mel")
    if manifest_mel and MelConfig(**manifest_mel) != mel_cfg:
        raise ConfigError(f"{data}/manifest.json has mel {manifest_mel}; the vocoder decodes {mel_cfg}")
    sampler = SegmentSampler(load_wave_split(data, "train"), args.segment, cfg.hop, args.device)
    if not 0.0 <= args.predicted_mel_p <= 1.0:
        raise ConfigError(f"--predicted-mel-p {args.predicted_mel_p} must be in [0, 1]")
    predicted = (
        PredictedMels(data, "train", cfg.hop, cfg.n_mels, args.device) if args.predicted_mel_p > 0 else None
    )
    val = eval_waves(data, args.eval_utts, args.eval_seconds, mel_cfg, args.device)

    torch.manual_seed(args.seed)
    model = Trainer(cfg, args.gan, args.disc_channels).to(args.device)
    vocoder, disc = model.vocoder, model.disc
    groups = [{"params": list(vocoder.parameters())}]
    groups += [{"params": list(disc.parameters())}] if disc is not None else []
    cuda = torch.device(args.device).type == "cuda"
    opt = torch.optim.AdamW(
        groups, lr=args.lr, betas=(0.8, 0.99), weight_decay=args.weight_decay, fused=cuda or None
    )
    start, elapsed, baseline = 0, 0.0, {}
    ckpt = out / "checkpoint"
    if args.init and not (args.resume and (ckpt / "state.json").exists()):
        init_vocoder(vocoder, Path(args.init), cfg)
    if args.resume and (ckpt / "state.json").exists():
        state = load_checkpoint(ckpt, model, opt)
        same_mix = state.get("args", {}).get("predicted_mel_p", 0.0) == args.predicted_mel_p
        if state.get("config") != cfg.to_dict() or bool(state.get("gan")) != args.gan or not same_mix:
            raise ConfigError(
                f"--resume: {ckpt} was trained with {state.get('config')}, gan={state.get('gan')}, "
                f"predicted_mel_p={state.get('args', {}).get('predicted_mel_p', 0.0)}; this run asks for "
                f"{cfg.to_dict()}, gan={args.gan}, predicted_mel_p={args.predicted_mel_p}"
            )
        start, elapsed, baseline = int(state["step"]), float(state["elapsed_s"]), state.get("baseline", {})
    fwd: Any = torch.compile(vocoder) if args.compile else vocoder
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text(command_line(args) + "\n")
    log = (out / "log.jsonl").open("a")
    autocast = {"device_type": torch.device(args.device).type, "dtype": torch.bfloat16, "enabled": args.bf16}
    clip = args.grad_clip or math.inf
    t0 = time.perf_counter()
    step = start - 1
    final: dict[str, float] = {}
    model.train()
    for step in range(start, args.steps):
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        gen = step_generator(args.seed, step)
        x, utt, rel = sampler.sample_positions(args.batch_size, gen)
        with torch.no_grad():
            real_mel = mel = log_mel(x, mel_cfg)
            if predicted is not None:  # the input, not the target: the loss always reads the real audio
                mel = predicted.mix(mel, utt, rel, args.predicted_mel_p, gen)
        with torch.autocast(**autocast):
            fake = fwd(mel)
        stats: dict[str, Tensor] = {}
        adversarial = disc is not None and step >= args.gan_start
        if adversarial:  # discriminator step on the detached output (hinge loss)
            with torch.autocast(**autocast):
                real_scores, _ = disc(x)
                fake_scores, _ = disc(fake.detach())
            d_loss = discriminator_hinge_loss(real_scores, fake_scores)
            opt.zero_grad(set_to_none=True)
            d_loss.backward()
            stats["d_grad_norm"] = torch.nn.utils.clip_grad_norm_(disc.parameters(), clip)
            opt.step()  # only the discriminator has gradients
            stats["d_loss"] = d_loss.detach()
        loss, rec_stats = reconstruction_loss(fake, x, weights, mel_cfg, target_mel=real_mel)
        stats.update(rec_stats)
        if adversarial:
            with torch.autocast(**autocast):
                with torch.no_grad():
                    _, real_fmaps = disc(x)
                fake_scores, fake_fmaps = disc(fake)
            adv, fm = generator_hinge_loss(fake_scores), feature_matching_loss(real_fmaps, fake_fmaps)
            loss = loss + weights.adv * adv + weights.fm * fm
            stats.update(g_adv=adv.detach(), g_fm=fm.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if disc is not None:
            for p in disc.parameters():
                p.grad = None
        stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(vocoder.parameters(), clip)
        opt.step()
        stats["loss"] = loss.detach()

        done = step + 1
        evaluating = done % args.eval_every == 0 or done == args.steps
        if evaluating or done % args.log_every == 0:
            rec: dict[str, Any] = {"step": done, **{k: float(v) for k, v in stats.items()}, "lr": lr}
            if evaluating:
                if not baseline:
                    baseline = evaluate_griffin_lim(val, mel_cfg, args.gl_iters)
                final = {**evaluate(vocoder, val, mel_cfg), **baseline}
                rec.update(final)
            rec["elapsed_s"] = round(elapsed + time.perf_counter() - t0, 3)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if evaluating:
                print(
                    json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in rec.items()})
                )
        stopping = bool(args.stop_at) and done >= args.stop_at
        if done % args.ckpt_every == 0 or done == args.steps or stopping:
            state = {
                "step": done,
                "elapsed_s": elapsed + time.perf_counter() - t0,
                "config": cfg.to_dict(),
                "gan": args.gan,
                "baseline": baseline,
            }
            save_checkpoint(ckpt, model, opt, {**state, "args": dict(vars(args))})
        if stopping:
            break
    log.close()
    wall = elapsed + time.perf_counter() - t0
    if step + 1 >= args.steps and not args.no_export:
        if not final:
            baseline = baseline or evaluate_griffin_lim(val, mel_cfg, args.gl_iters)
            final = {**evaluate(vocoder, val, mel_cfg), **baseline}
        if args.samples:
            write_samples(vocoder, val[: args.samples], out / "samples", mel_cfg, args.gl_iters)
        record = training_record(args, data_record(data), wall, final)
        save_vocoder(vocoder.float().cpu(), out / "model", record, args.export_bits)
        print(
            f"exported {out / 'model'} ({vocoder.num_parameters():,} parameters): val mel L1 "
            f"{final['val_mel_l1']:.4f} (Griffin-Lim {final['gl_mel_l1']:.4f}), in {wall:.0f} s"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    try:
        if args.steps < 1 or args.batch_size < 1 or args.log_every < 1 or args.eval_every < 1:
            raise ConfigError(
                f"--steps {args.steps}, --batch-size {args.batch_size}, --log-every {args.log_every} and "
                f"--eval-every {args.eval_every} must be >= 1"
            )
        if args.ckpt_every < 1:
            raise ConfigError(f"--ckpt-every {args.ckpt_every} must be >= 1")
        train(args)
    except ArrowDiffError as e:
        print(f"arrowdiff.speech.train_vocoder: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
