"""Text-to-image quality of a model with an image head (issue 6 part 7): Frechet distance on EfficientNet
features, caption faithfulness under an in-project CLIP-style judge, the VAE round trip at 64 and 512, and a
sample grid. Writes `benchmarks/results/image_quality.json` and `benchmarks/results/image_samples.png`.
From the repository root:

    python -m benchmarks.image_quality [--model DIR] [--n 501] [--steps 20] [--quick]

Generated set: one image per held-out caption (`data/images` val split, the data set's caption = caption
variant 0; emoji names never seen in training), seed = --seed + row, Euler sampler, --steps steps, at
guidance scale 3 (classifier-free guidance on the caption), 1 (conditioned, no guidance) and 0
(unconditioned). Rows share seeds across scales, so the comparison is paired. Images are generated in
batches with the same per-row noise, velocity and decoding as `ArrowEngine.diffuse(..., modality="image")`
(checked in the same run against `diffuse` for the first caption at every scale).

1. Frechet distance (FD, the FID formula; `arrowdiff.image.frechet`) between Gaussians fitted to
   EfficientNet-Lite0 pooled 1280-d ImageNet features (bilinear resize to 224, ImageNet normalisation;
   `benchmarks/image_features.py`) of N generated images and the N held-out val images. References in the
   same feature space and at the same N (FD is biased upwards at small N, so only same-N figures compare):
   - floor: the VAE round trip of the val images (what a perfect latent generator would reach);
   - ceiling-ish: N random TRAINING images (real emoji, other names) vs val;
   - noise: two disjoint random N-subsets of the training set (real vs real), and the two halves of the
     whole training set (~5,142 each) for the large-N value.
   Random draws are repeated --fd-draws times (mean and std).
2. Caption faithfulness: a CLIP-style judge trained here on the TRAIN split only (`arrowdiff.image.scorer`:
   frozen EfficientNet features -> MLP, frozen MiniLM caption embeddings -> linear, multi-positive
   InfoNCE; saved to runs/ through the project weight format, not shipped). Calibration: its val
   retrieval accuracy (image -> its caption among the distinct val captions, top-1/top-5). Then, per image
   set, the pairwise rate (own caption scores above a uniformly drawn other distinct val caption; 0.5 =
   chance) and the mean matched / mismatched cosine. Real val images give the ceiling.
3. VAE round trip (the model's own `vae` component): SSIM/PSNR (`arrowdiff.image.metrics`) at 64x64 on
   every val image; at 512x512 on val images upsampled 64 -> 512 with Lanczos (evenly strided subset), and,
   when `data/images-512` exists (held-out SVGs rasterised at 512), on those too. R2.4 reads the
   rasterised SVGs when present (real 512 detail), else the Lanczos upsamples; the figure names its source.
4. A sample grid (captions x guidance 1, 3, 5, nearest-neighbour x3) with the real val image on top.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arrowdiff.engine import ArrowEngine
from arrowdiff.image.frechet import feature_frechet_distance
from arrowdiff.image.metrics import mean_finite, psnr, ssim
from arrowdiff.image.scorer import (
    ScorerConfig,
    ScorerTraining,
    embed_captions,
    embed_images,
    pairwise_rates,
    retrieval_accuracy,
    save_scorer,
    train_scorer,
)
from arrowdiff.image.shards import load_manifest, open_images, read_captions
from arrowdiff.image.train_vae import reconstruct
from arrowdiff.image.vae_io import load_vae
from arrowdiff.image_core import ImageCore
from arrowdiff.loading import load_model, resolve_model_path
from arrowdiff.samplers import initial_noise, sample_euler
from arrowdiff.schedules import timesteps
from arrowdiff.training.memory_data import dequantize_embeddings
from benchmarks.common import target, write_results
from benchmarks.image_features import TAG, EffNetFeatures

RESULTS = Path(__file__).resolve().parent / "results"
FD_UNIT = "FD (EfficientNet-Lite0 1280-d features)"


def scale_name(scale: float) -> str:
    return "unconditioned_0" if scale == 0 else f"guidance_{scale:g}"


@torch.inference_mode()
def generate_batch(
    core: ImageCore, emb: np.ndarray, seeds: list[int], steps: int, scale: float
) -> np.ndarray:
    """One image per row of caption embeddings ``emb`` (B, 384): ImageCore's velocity with a caption per row
    (scale 0: unconditioned, 1: conditioned, else cond + uncond in one batched pass), noise from each row's
    seed as `diffuse(seed=...)` draws it, Euler over uniform times, decoded at the trained size."""
    model, cfg = core.model, core.cfg
    B = len(seeds)
    cap = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))[:, None, :]
    shape = (1, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    x = torch.cat([initial_noise(shape, torch.Generator().manual_seed(s)) for s in seeds])
    keep = torch.cat([torch.ones(B, 1, dtype=torch.bool), torch.zeros(B, 1, dtype=torch.bool)])

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if scale == 0.0:
            return model(x, t, "image")
        if scale == 1.0:
            return model(x, t, "image", caption=cap)
        out = model(
            torch.cat([x, x]), torch.cat([t, t]), "image", caption=torch.cat([cap, cap]), caption_mask=keep
        )
        vc, vu = out[:B], out[B:]
        return vu + scale * (vc - vu)

    z = sample_euler(velocity, x, timesteps(steps, "uniform").float())
    return core.decode(z, None, None)


def generate_all(
    core: ImageCore, emb: np.ndarray, seeds: list[int], steps: int, scale: float, batch: int
) -> np.ndarray:
    from tqdm import tqdm

    out = []
    for i in tqdm(range(0, len(seeds), batch), desc=f"generate {scale_name(scale)}", leave=False):
        out.append(generate_batch(core, emb[i : i + batch], seeds[i : i + batch], steps, scale))
    return np.concatenate(out)


def check_against_diffuse(
    engine: ArrowEngine, core: ImageCore, caption: str, seed: int, steps: int, scales: list[float]
) -> dict[str, Any]:
    """The batched generator against `ArrowEngine.diffuse` for one caption (uint8 differences)."""
    emb = engine.encode([caption])
    out = {}
    for s in scales:
        ref = engine.diffuse(caption, modality="image", num_steps=steps, guidance_scale=s, seed=seed)
        got = generate_batch(core, emb, [seed], steps, s)[0]
        d = np.abs(ref.astype(np.int16) - got.astype(np.int16))
        out[scale_name(s)] = {"max_abs_diff": int(d.max()), "mean_abs_diff": float(d.mean())}
        if d.mean() > 1.0:
            raise SystemExit(f"batched generation differs from diffuse at scale {s}: {out[scale_name(s)]}")
    return out


def draws_fd(
    a: np.ndarray, b_pool: np.ndarray, n: int, draws: int, rng: np.random.Generator
) -> dict[str, Any]:
    """FD of ``a`` vs ``draws`` random n-subsets of ``b_pool``: mean, std and every value."""
    vals = [
        feature_frechet_distance(a, b_pool[rng.choice(len(b_pool), n, replace=False)]) for _ in range(draws)
    ]
    return {"value": float(np.mean(vals)), "std": float(np.std(vals)), "draws": vals, "n": n, "unit": FD_UNIT}


def split_fd(pool: np.ndarray, n: int, draws: int, rng: np.random.Generator) -> dict[str, Any]:
    """FD between two disjoint random n-subsets of ``pool``, ``draws`` times."""
    vals = []
    for _ in range(draws):
        idx = rng.permutation(len(pool))
        vals.append(feature_frechet_distance(pool[idx[:n]], pool[idx[n : 2 * n]]))
    return {"value": float(np.mean(vals)), "std": float(np.std(vals)), "draws": vals, "n": n, "unit": FD_UNIT}


def image_scores(ref: np.ndarray, rec: np.ndarray) -> dict[str, Any]:
    return {
        "ssim": float(ssim(ref, rec).mean()),
        "psnr_db": mean_finite(psnr(ref, rec)),
        "images": len(ref),
        "psnr_note": "identical images count as 100 dB",
    }


def lanczos(images: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.stack(
        [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS)) for im in images]
    )


def caption_mismatch(embedded: list[list[str]], current: list[str]) -> int:
    """How many embedded captions (variant 0) differ from the image set's current captions in punctuation
    only; exits if any differs in words or the counts differ (then the embeddings belong to other images)."""
    words = lambda s: re.sub(r"[,:]", " ", s).split()  # noqa: E731
    if len(embedded) != len(current) or any(
        words(e[0]) != words(c) for e, c in zip(embedded, current, strict=False)
    ):
        raise SystemExit(
            "the caption embeddings are not those of the image set in order; rebuild the captions"
        )
    return sum(e[0] != c for e, c in zip(embedded, current, strict=True))


def caption_ids(texts: list[str], vocab: dict[str, int]) -> np.ndarray:
    return np.array([vocab.setdefault(t, len(vocab)) for t in texts])


def faithfulness(img_emb: np.ndarray, cap_emb: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    return pairwise_rates(img_emb @ cap_emb.T, truth)


def make_grid(
    real: np.ndarray, rows: dict[str, np.ndarray], captions: list[str], path: Path, zoom: int = 3
) -> dict[str, Any]:
    """Columns = captions, rows = the real image then one row per setting; captions written under each
    column, row labels on the left."""
    from PIL import Image, ImageDraw, ImageFont

    cell = real.shape[1] * zoom
    pad, label_w, font_size = 6, 110, 14
    font = ImageFont.load_default(size=font_size)
    lines = [textwrap.wrap(c, width=max(cell // 8, 8))[:4] for c in captions]
    text_h = (font_size + 3) * max(len(ls) for ls in lines) + pad
    names = ["real (val)", *rows]
    W = label_w + len(captions) * (cell + pad) + pad
    H = pad + len(names) * (cell + pad) + text_h
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    for r, (name, ims) in enumerate(zip(names, [real, *rows.values()], strict=True)):
        y = pad + r * (cell + pad)
        draw.text((pad, y + cell // 2 - font_size // 2), name, fill="black", font=font)
        for c, im in enumerate(ims):
            tile = Image.fromarray(im).resize((cell, cell), Image.Resampling.NEAREST)
            img.paste(tile, (label_w + pad + c * (cell + pad), y))
    y0 = pad + len(names) * (cell + pad)
    for c, ls in enumerate(lines):
        for k, line in enumerate(ls):
            draw.text(
                (label_w + pad + c * (cell + pad), y0 + k * (font_size + 3)), line, fill="black", font=font
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    return {"path": str(path), "size_px": [W, H], "rows": names, "zoom": f"nearest x{zoom}"}


def pick_grid(records: list[dict[str, Any]], k: int) -> list[int]:
    """k val rows with distinct emoji names, evenly spread over the split (Noto PNG preferred)."""
    first: dict[str, int] = {}
    for i, r in enumerate(records):
        if r["key"] not in first or (
            r["source"] == "noto-png" and records[first[r["key"]]]["source"] != "noto-png"
        ):
            first[r["key"]] = i
    rows = sorted(first.values())
    return [rows[j] for j in np.linspace(0, len(rows) - 1, k).round().astype(int)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model dir with an image head and a vae (default: shipped)")
    p.add_argument("--data", default="data/images", help="the 64x64 caption-image set (make image-data)")
    p.add_argument("--captions", default="data/image_latents", help="MiniLM caption embeddings (image_data)")
    p.add_argument("--data-512", default="data/images-512", help="held-out SVGs rasterised at 512 (optional)")
    p.add_argument("--n", type=int, default=0, help="val captions to generate for (0 = all)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--scales", default="3,1,0", help="guidance scales for FD and faithfulness")
    p.add_argument("--batch", type=int, default=64, help="images per generation batch")
    p.add_argument(
        "--train-limit", type=int, default=0, help="training images used (0 = all; evenly strided)"
    )
    p.add_argument("--fd-draws", type=int, default=5, help="random draws for the reference FDs")
    p.add_argument("--n512", type=int, default=64, help="val images round-tripped at 512x512 (each source)")
    p.add_argument("--grid", type=int, default=8, help="captions in the sample grid")
    p.add_argument("--grid-scales", default="1,3,5")
    p.add_argument("--scorer-epochs", type=int, default=40)
    p.add_argument("--scorer-out", default="runs/image_scorer", help="where the trained judge is saved")
    p.add_argument("--cache", default="runs/image_quality/features", help="feature cache ('' = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="tiny numbers for a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.steps, args.train_limit, args.fd_draws = 16, 4, 256, 2
        args.n512, args.grid, args.scorer_epochs = 2, 2, 5
        args.scorer_out = "runs/image_scorer-quick"
    args.scales = [float(s) for s in str(args.scales).split(",")]
    args.grid_scales = [float(s) for s in str(args.grid_scales).split(",")]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    loadavg = os.getloadavg()[0]
    cache = Path(args.cache) if args.cache else None
    rng = np.random.default_rng(args.seed)

    # ---- data ----------------------------------------------------------------------------------------------
    val = np.array(open_images(args.data, "val"))
    val_rec = read_captions(args.data, "val").to_pylist()
    train_all = open_images(args.data, "train")
    pick = np.arange(len(train_all))
    if args.train_limit and args.train_limit < len(pick):
        pick = np.linspace(0, len(train_all) - 1, args.train_limit).round().astype(int)
    train = np.array(train_all[pick])
    cap_dir = Path(args.captions)
    all_train_texts = json.loads((cap_dir / "train_captions.json").read_text())
    train_texts = [all_train_texts[i] for i in pick]
    val_texts = json.loads((cap_dir / "val_captions.json").read_text())
    stale = caption_mismatch(all_train_texts, read_captions(args.data, "train").column("caption").to_pylist())
    stale += caption_mismatch(val_texts, [r["caption"] for r in val_rec])
    train_caps = dequantize_embeddings(np.load(cap_dir / "train_captions.npy")[pick])
    val_caps = dequantize_embeddings(np.load(cap_dir / "val_captions.npy"))
    n = len(val) if not args.n else min(args.n, len(val))
    rows = np.arange(n) if n == len(val) else np.linspace(0, len(val) - 1, n).round().astype(int)
    captions = [val_rec[i]["caption"] for i in rows]
    seeds = [args.seed + int(i) for i in rows]

    # ---- model ---------------------------------------------------------------------------------------------
    path = resolve_model_path(args.model)
    lm = load_model(path)
    vae = load_vae(path)
    engine = ArrowEngine(diffusion=lm)
    core = ImageCore(lm.model, vae, lambda t: engine.encode(list(t)))
    t0 = time.perf_counter()
    prompt_emb = engine.encode(captions)
    check = check_against_diffuse(engine, core, captions[0], seeds[0], args.steps, args.scales)
    generated = {s: generate_all(core, prompt_emb, seeds, args.steps, s, args.batch) for s in args.scales}
    timing["generate_s"] = time.perf_counter() - t0
    print(f"generated {n} images x {len(args.scales)} scales in {timing['generate_s']:.0f} s")

    # ---- VAE round trip ------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    with torch.inference_mode():
        val_rt = reconstruct(vae, val)
        sub = np.linspace(0, len(val) - 1, min(args.n512, len(val))).round().astype(int)
        up = lanczos(val[sub], 512)
        recon = {"native_64": image_scores(val, val_rt)}
        recon["native_64"]["source"] = f"every held-out image of {args.data} at 64x64"
        recon["lanczos_upsampled_512"] = image_scores(up, reconstruct(vae, up, batch_size=4))
        recon["lanczos_upsampled_512"]["source"] = (
            f"{len(sub)} held-out 64x64 images (evenly strided) upsampled to 512x512 with Lanczos, then "
            "VAE-encoded (posterior mean) and decoded at 512x512; smooth inputs, so easier than real "
            "512 detail"
        )
        if (Path(args.data_512) / "manifest.json").exists():
            v512 = open_images(args.data_512, "val")
            s512 = np.linspace(0, len(v512) - 1, min(args.n512, len(v512))).round().astype(int)
            v512 = np.array(v512[s512])
            recon["rasterised_svg_512"] = image_scores(v512, reconstruct(vae, v512, batch_size=4))
            recon["rasterised_svg_512"]["source"] = (
                f"{len(s512)} held-out SVGs rasterised at 512x512 ({args.data_512}: "
                f"{load_manifest(args.data_512).get('command', '')}), evenly strided"
            )
    r24_key = "rasterised_svg_512" if "rasterised_svg_512" in recon else "lanczos_upsampled_512"
    timing["vae_roundtrip_s"] = time.perf_counter() - t0
    print(
        "VAE round trip: "
        + ", ".join(f"{k} SSIM {v['ssim']:.3f} PSNR {v['psnr_db']:.1f}" for k, v in recon.items())
    )

    # ---- features ------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    fx = EffNetFeatures()
    f_train, train_cached = fx.cached(train, cache, "features train")
    f_val, val_cached = fx.cached(val, cache, "features val")
    f_rt = fx(val_rt, "features vae round trip")
    f_gen = {s: fx(im, f"features {scale_name(s)}") for s, im in generated.items()}
    timing["features_s"] = time.perf_counter() - t0

    # ---- Frechet distances ---------------------------------------------------------------------------------
    f_val_n = f_val[rows]
    half = len(f_train) // 2
    perm = rng.permutation(len(f_train))
    fd: dict[str, Any] = {
        "generated_vs_val": {
            scale_name(s): {"value": feature_frechet_distance(f, f_val_n), "n": n, "unit": FD_UNIT}
            for s, f in f_gen.items()
        },
        "floor_vae_roundtrip_vs_val": {
            "value": feature_frechet_distance(f_rt[rows], f_val_n),
            "n": n,
            "unit": FD_UNIT,
        },
        "ceiling_random_train_vs_val": draws_fd(f_val_n, f_train, n, args.fd_draws, rng),
        "noise_train_vs_train_same_n": split_fd(f_train, n, args.fd_draws, rng),
        "noise_train_halves_full": {
            "value": feature_frechet_distance(f_train[perm[:half]], f_train[perm[half : 2 * half]]),
            "n": half,
            "unit": FD_UNIT,
        },
    }

    # ---- the judge -----------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    vocab: dict[str, int] = {}
    ids = np.stack([caption_ids([t[v] for t in train_texts], vocab) for v in range(train_caps.shape[1])], 1)
    recipe = ScorerTraining(epochs=args.scorer_epochs, seed=args.seed)
    scorer, log = train_scorer(f_train, train_caps, ids, ScorerConfig(), recipe)
    timing["scorer_train_s"] = time.perf_counter() - t0
    uniq_text, uniq_row, truth_all = np.unique(
        [t[0] for t in val_texts], return_index=True, return_inverse=True
    )
    cap_emb = embed_captions(scorer, val_caps[uniq_row, 0])  # distinct val captions (variant 0)
    img_val = embed_images(scorer, f_val)
    retrieval = retrieval_accuracy(img_val @ cap_emb.T, truth_all)
    keys = np.array([r["key"] for r in val_rec])
    best = (img_val @ cap_emb.T).argmax(1)
    same_key_top1 = float((keys[uniq_row[best]] == keys).mean())
    truth = truth_all[rows]
    faith: dict[str, Any] = {
        "real_val_ceiling": faithfulness(img_val[rows], cap_emb, truth),
        "vae_roundtrip_val": faithfulness(embed_images(scorer, f_rt[rows]), cap_emb, truth),
        **{scale_name(s): faithfulness(embed_images(scorer, f), cap_emb, truth) for s, f in f_gen.items()},
        "random_caption_baseline": {"pairwise_rate": 0.5, "note": "by construction"},
    }
    scorer_dir = save_scorer(
        scorer,
        Path(args.scorer_out),
        training={
            "command": "python -m benchmarks.image_quality" + (" --quick" if args.quick else ""),
            "recipe": recipe.__dict__,
            "train_images": len(f_train),
            "features": TAG,
            "text": "MiniLM all-MiniLM-L6-v2 embeddings, 3 caption variants (data/image_latents)",
            "final_loss": log[-1]["loss"],
        },
    )

    # ---- grid ----------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    g_rows = pick_grid(val_rec, args.grid)
    g_caps = [val_rec[i]["caption"] for i in g_rows]
    g_emb = engine.encode(g_caps)
    g_seeds = [args.seed + i for i in g_rows]
    grid_rows = {
        f"guidance {s:g}": generate_batch(core, g_emb, g_seeds, args.steps, s) for s in args.grid_scales
    }
    out_dir = Path(args.out) if args.out else RESULTS
    grid = make_grid(val[g_rows], grid_rows, g_caps, out_dir / "image_samples.png")
    grid.update(
        {"captions": g_caps, "val_rows": [int(i) for i in g_rows], "seeds": g_seeds, "steps": args.steps}
    )
    timing["grid_s"] = time.perf_counter() - t0

    figures = {
        "model": {"path": str(path), "parameters": lm.model.parameter_split(), "vae": vae.num_parameters()},
        "settings": {
            "n_generated_per_scale": n,
            "val_rows": "all" if n == len(val) else [int(i) for i in rows],
            "steps": args.steps,
            "sampler": "euler, uniform spacing",
            "scales": args.scales,
            "seeds": f"{args.seed} + val row, the same for every scale",
            "caption": "the data set's caption (variant 0), encoded by MiniLM like diffuse() does",
            "judge_caption_embeddings": f"{args.captions} (int8); {stale} of its captions differ from "
            f"{args.data}'s current ones in punctuation only (': ' vs ', ')",
            "train_images": len(f_train),
            "features": TAG,
            "feature_cache": {"train": train_cached, "val": val_cached, "dir": str(cache) if cache else None},
            "fd_draws": args.fd_draws,
            "threads": args.threads,
            "loadavg_1m_at_start": loadavg,
            "quick": args.quick,
        },
        "batched_vs_diffuse_check": check,
        "frechet": fd,
        "fd_note": f"N = {n} per set against {n} val images, 1280-d features: covariances are rank-"
        "deficient and FD carries a large small-N bias; compare only with the same-N references (floor, "
        "noise, ceiling).",
        "scorer": {
            "what": "CLIP-style judge trained here on train pairs only (arrowdiff.image.scorer)",
            "config": ScorerConfig().__dict__,
            "recipe": recipe.__dict__,
            "train_images": len(f_train),
            "final_loss": log[-1]["loss"],
            "temperature": log[-1]["temperature"],
            "saved_to": str(scorer_dir),
            "val_retrieval": {
                **retrieval,
                "candidates": len(uniq_text),
                "images": len(f_val),
                "same_emoji_top1": same_key_top1,
                "note": "image -> its own caption among the distinct val captions (variant 0); many differ "
                "only in skin tone. same_emoji_top1: the top caption belongs to the same base emoji (key).",
            },
        },
        "faithfulness": faith,
        "vae_roundtrip": recon,
        "grid": grid,
        "timing": {
            k: {"value": v, "unit": "s"}
            for k, v in {**timing, "total_s": time.perf_counter() - t_start}.items()
        },
    }
    targets = [
        target("R2.4", "VAE round-trip SSIM at 512x512", recon[r24_key]["ssim"], ">=", 0.80, ""),
    ]
    targets[0]["source"] = recon[r24_key]["source"]
    path_out = write_results("image_quality", figures, targets, results_dir=out_dir)

    print(f"\nFD vs val (N={n}):")
    for k, v in fd["generated_vs_val"].items():
        print(f"  {k:24} {v['value']:8.2f}")
    for k in ("floor_vae_roundtrip_vs_val", "ceiling_random_train_vs_val", "noise_train_vs_train_same_n"):
        print(f"  {k:30} {fd[k]['value']:8.2f}")
    print(f"  noise_train_halves_full (n={half}) {fd['noise_train_halves_full']['value']:.2f}")
    print(
        f"judge val retrieval: top1 {retrieval['top1']:.3f} top5 {retrieval['top5']:.3f} of {len(uniq_text)}"
    )
    for k, v in faith.items():
        extra = (
            f" matched {v['matched_cos']:.3f} mismatched {v['mismatched_cos']:.3f}"
            if "matched_cos" in v
            else ""
        )
        print(f"  {k:24} pairwise {v['pairwise_rate']:.3f}{extra}")
    print(
        f"R2.4: {targets[0]['value']:.4f} >= 0.80 -> {'met' if targets[0]['met'] else 'NOT met'} ({r24_key})"
    )
    print(path_out)


if __name__ == "__main__":
    main()
