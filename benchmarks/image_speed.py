"""Wall time of one 512x512 text-to-image generation on this CPU, stage by stage, beside the machine's
compute roofline, and the INT4 size of the image model (issue 6 part 8; R2.5, R2.6). Writes
`benchmarks/results/image_speed.json`. From the repository root:

    python -m benchmarks.image_speed [--steps 4,20,50] [--repeats 3] [--quick]

Models:
(a) the shipped default (INT4 on disk), loaded as `ArrowEngine.from_pretrained(compute=c)` for c in
    --computes (fp32 dequantizes everything; bf16 and int8 (W8A8) run the backbone's linear layers as
    QuantLinears), trained. fp32 at every --steps; the other forms at the fewest steps only (on a CPU
    without bf16/VNNI instructions they are one to two orders of magnitude slower: see gemm_peak).
(b) the `workstation` preset with an image head and a caption conditioner (schedule and image geometry of
    the shipped model), RANDOM INIT (latency only), exported through the project's INT4 writer with the
    shipped model's quantisation policy together with the shipped VAE, then loaded back from that
    directory with each compute form: the same path a trained workstation model would take.

A 512x512 image is made the way `diffuse(..., height=512, width=512)` makes it: the denoiser runs on the
trained latent size (8x8x4 = 64 tokens), the latent is resized bicubically to 64x64 and the VAE decodes
it at 512x512. Stages, each the median of --repeats after a warm-up: caption encoding (MiniLM, one
caption), the denoiser steps (Euler; guidance on = scale 3 with cond and uncond rows in one batched pass,
off = scale 1, one row), the VAE decode at 512x512. `end_to_end` is measured as one call (`diffuse` for
(a); ImageCore.generate for (b)) for the configurations the targets read, and the sum of stage medians
elsewhere. A workstation variant whose latent is the native 64x64 grid of a 512x512 image (patch 2:
1,024 tokens) shows what a denoiser without the latent upsampling would cost: FLOPs and roofline always,
wall time with --native512-time (fp32, random init, fewest steps).

Roofline: fp32, bf16 and int8 GEMM throughput measured here in the same run (gemm_peak); FLOPs of one
denoiser pass counted with torch.utils.flop_counter (matmuls and attention) next to the 2 * params * tokens
estimate, and of the VAE decoder at 512x512 (convolutions). roofline_s = FLOPs / measured GEMM peak.

Sizes: bytes on disk of every component file of the shipped model, and of the workstation export; the image
model = backbone + heads/image + conditioners/caption + vae (what image generation loads); the text/code
heads and the memory conditioner are listed apart. The analytic size (payload + fp16 scale + uint8 zero per
group, from the policy) is checked against the written files.

The 2-core CPU may be shared: the 1-minute load average is recorded at the start and at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from arrowdiff.config import get_preset
from arrowdiff.engine import ArrowEngine
from arrowdiff.image.vae_io import load_vae
from arrowdiff.image_core import ImageCore, ImageOptions
from arrowdiff.loading import load_model, resolve_model_path
from arrowdiff.network.model import UnifiedModel
from arrowdiff.samplers import initial_noise, sample_euler
from arrowdiff.schedules import timesteps
from arrowdiff.weights import QuantPolicy, load_model_dir
from arrowdiff.weights.quantize import layout
from benchmarks.common import target, write_results

PROMPT = "red heart"
SIDE = 512
GUIDANCE = {"on": 3.0, "off": 1.0}
IMAGE_PARTS = ("backbone", "heads/image", "conditioners/caption", "vae")
MB = 1e6


def median_s(fn: Callable[[], object], repeats: int) -> dict[str, Any]:
    """Median wall seconds of ``repeats`` calls (the caller warms up first)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": repeats,
    }


def gemm_peak(repeats: int) -> dict[str, Any]:
    """GEMM throughput of this CPU now: fp32 (2048^3), bf16 (512^3: slow where the CPU lacks bf16
    instructions) and int8 through torch._int_mm (64x1024x4096, the W8A8 path), medians."""
    cases = (
        ("fp32", torch.float32, (2048, 2048, 2048)),
        ("bf16", torch.bfloat16, (512, 512, 512)),
        ("int8", torch.int8, (64, 1024, 4096)),
    )
    out: dict[str, Any] = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for name, dtype, (m, k, n) in cases:
        if dtype == torch.int8:
            a, b = (
                torch.randint(-127, 128, (m, k), dtype=dtype),
                torch.randint(-127, 128, (k, n), dtype=dtype),
            )
            fn = lambda a=a, b=b: torch._int_mm(a, b)  # noqa: E731
        else:
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            fn = lambda a=a, b=b: a @ b  # noqa: E731
        fn()
        t = median_s(fn, max(repeats, 3))["median_s"]
        unit = "GOP/s" if name == "int8" else "GFLOP/s"
        out[f"{name}_gflops"] = {"value": 2 * m * k * n / t / 1e9, "unit": unit, "shape": f"{m}x{k}x{n}"}
    out["design_md_reference"] = (
        "DESIGN.md: ~150 GFLOP/s fp32, ~400 bf16, 400-860 GOP/s int8 on the machine it was measured on"
    )
    return out


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call, counted by torch.utils.flop_counter (grad mode on: its module tracker needs it)."""
    with torch.enable_grad(), FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def denoiser_flops(model: UnifiedModel, guidance: bool) -> int:
    cfg = model.cfg.image
    rows = 2 if guidance else 1
    x = torch.randn(rows, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    cap = torch.randn(rows, 1, 384)
    mask = torch.tensor([[True], [False]][:rows])
    return count_flops(lambda: model(x, torch.rand(rows), "image", caption=cap, caption_mask=mask))


def tokens_per_image(model: UnifiedModel) -> int:
    c = model.cfg.image
    return (c.latent_size // c.patch) ** 2


def stage_times(core: ImageCore, steps_list: list[int], repeats: int) -> dict[str, Any]:
    """Caption encoding, the denoiser for every (steps, guidance), and the 512x512 decode: medians."""
    out: dict[str, Any] = {}
    core.embed([PROMPT])  # loads MiniLM
    out["caption_encode"] = median_s(lambda: core.embed([PROMPT]), repeats)
    cap = torch.from_numpy(core.embed([PROMPT]).astype(np.float32))[:, None, :]
    s = core.cfg.latent_size
    x = initial_noise((1, core.cfg.latent_channels, s, s), torch.Generator().manual_seed(0))
    with torch.inference_mode():
        z = sample_euler(core.velocity(cap, GUIDANCE["on"]), x, timesteps(2).float())  # warm-up
        z = sample_euler(core.velocity(cap, GUIDANCE["off"]), x, timesteps(2).float())
        core.decode(z, SIDE, SIDE)
        out["vae_decode_512"] = median_s(lambda: core.decode(z, SIDE, SIDE), repeats)
        for steps in steps_list:
            times = timesteps(steps).float()
            for g, scale in GUIDANCE.items():
                v = core.velocity(cap, scale)
                r = median_s(lambda v=v, times=times: sample_euler(v, x, times), repeats)
                r["per_step_s"] = r["median_s"] / steps
                out[f"denoise_{steps}steps_guidance_{g}"] = r
    return out


def summarise(stages: dict[str, Any], steps_list: list[int]) -> dict[str, Any]:
    """Sum of stage medians per configuration (caption encode + denoise + decode)."""
    enc, dec = stages["caption_encode"]["median_s"], stages["vae_decode_512"]["median_s"]
    return {
        f"{steps}steps_guidance_{g}": {
            "value": enc + stages[f"denoise_{steps}steps_guidance_{g}"]["median_s"] + dec,
            "unit": "s",
            "how": "sum of stage medians",
        }
        for steps in steps_list
        for g in GUIDANCE
    }


def roofline(model: UnifiedModel, vae_flops: int, peak: dict[str, Any], params: int) -> dict[str, Any]:
    """FLOPs of one denoiser pass and of the decode, and the time they need at the measured GEMM peak."""
    tokens = tokens_per_image(model)
    out: dict[str, Any] = {
        "backbone_plus_image_head_params": params,
        "tokens_per_image": tokens,
        "estimate_2_params_tokens_gflop_per_row": 2 * params * tokens / 1e9,
        "vae_decode_512_gflop": vae_flops / 1e9,
    }
    for g in GUIDANCE:
        f = denoiser_flops(model, g == "on")
        out[f"denoiser_step_guidance_{g}_gflop"] = f / 1e9
        for dt in ("fp32", "bf16"):
            out[f"denoiser_step_guidance_{g}_roofline_{dt}_s"] = f / (peak[f"{dt}_gflops"]["value"] * 1e9)
    for dt in ("fp32", "bf16"):
        out[f"vae_decode_512_roofline_{dt}_s"] = vae_flops / (peak[f"{dt}_gflops"]["value"] * 1e9)
    return out


def dir_sizes(path: Path) -> dict[str, Any]:
    """Bytes on disk per component file, the image model's share, and the directory total."""
    meta = load_model_dir(path).metadata
    comp = {name: (path / rel).stat().st_size for name, rel in meta["components"].items()}
    image = {k: comp[k] for k in IMAGE_PARTS if k in comp}
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {
        "components_bytes": comp,
        "image_model_bytes": sum(image.values()),
        "image_model_mb": sum(image.values()) / MB,
        "image_specific_bytes": {k: v for k, v in image.items() if k != "backbone"},
        "image_specific_mb": sum(v for k, v in image.items() if k != "backbone") / MB,
        "not_image_bytes": {k: v for k, v in comp.items() if k not in IMAGE_PARTS},
        "directory_total_bytes": total,
        "directory_total_mb": total / MB,
        "quantization": meta["quantization"]["policy"],
    }


def analytic_bytes(parts: dict[str, dict[str, torch.Tensor]], policy: QuantPolicy) -> dict[str, int]:
    """Payload + fp16 scale + uint8 zero (rtn) per group, per component, from the policy alone."""
    out = {}
    for comp, sd in parts.items():
        total = 0
        for name, t in sd.items():
            bits = policy.bits_for(name, t)
            payload, groups, _ = layout(tuple(t.shape), bits, policy.group_size)
            total += payload + 3 * groups
        out[comp] = total
    return out


def workstation_config(shipped_cfg: Any, native512: bool = False) -> Any:
    cfg = get_preset("workstation")
    image = shipped_cfg.image
    if native512:
        image = replace(image, latent_size=SIDE // image.downsample, patch=2)
    return replace(
        cfg,
        modalities=("text", "code", "image"),
        conditioners=("caption",),
        schedule=shipped_cfg.schedule,
        image=image,
    )


def export_workstation(shipped: Path, shipped_cfg: Any, out: Path, seed: int) -> dict[str, Any]:
    """Random-init workstation image model -> INT4 directory (shipped policy, shipped VAE)."""
    from arrowdiff.training.export import export_model

    shipped_meta = load_model_dir(shipped).metadata
    policy = QuantPolicy.from_dict(shipped_meta["quantization"]["policy"])
    vae_rules = (("encoder.*", 16), ("decoder.*", 16))  # export_model adds these for the VAE itself
    policy = replace(policy, keep=tuple(r for r in policy.keep if r not in vae_rules))
    torch.manual_seed(seed)
    model = UnifiedModel(workstation_config(shipped_cfg))
    split = model.parameter_split()
    vae = load_vae(shipped)
    parts = {**model.component_state_dicts(), "vae": vae.state_dict()}
    analytic = analytic_bytes(parts, replace(policy, keep=(*policy.keep, *vae_rules)))
    t = time.perf_counter()
    export_model(
        model,
        shipped / shipped_meta.get("tokenizer", "tokenizer.json"),
        out,
        {"seq_len": 256, "note": "random init (latency only)", "seed": seed},
        policy,
        vae_dir=shipped,
    )
    export_s = time.perf_counter() - t
    del model, parts
    gc.collect()
    return {
        "parameters": split,
        "parameters_total": sum(split.values()),
        "vae_parameters": vae.num_parameters(),
        "export_s": export_s,
        "analytic_bytes": analytic,
        "analytic_image_model_mb": sum(analytic[k] for k in IMAGE_PARTS) / MB,
    }


def shipped_one(path: Path, compute: str, steps_list: list[int], repeats: int) -> dict[str, Any]:
    """Stages and end-to-end `diffuse()` times of the shipped model loaded with one compute form."""
    t = time.perf_counter()
    engine = ArrowEngine.from_pretrained(path, compute=compute)
    load_s = time.perf_counter() - t

    def run(steps: int, scale: float) -> np.ndarray:
        return engine.diffuse(
            PROMPT, modality="image", num_steps=steps, guidance_scale=scale, seed=0, height=SIDE, width=SIDE
        )

    img = run(2, GUIDANCE["on"])  # warm-up: loads the VAE and MiniLM, materializes QuantLinears
    assert img.shape == (SIDE, SIDE, 3), img.shape
    # the stages through an ImageCore over the same model, VAE and encoder that diffuse() uses
    core = ImageCore(engine.diffusion.model, load_vae(path), lambda t: engine.encode(list(t)))
    stages = stage_times(core, steps_list, repeats)
    e2e = {
        f"{s}steps_guidance_{g}": {**median_s(lambda s=s, v=v: run(s, v), repeats), "how": "diffuse() call"}
        for s in steps_list
        for g, v in GUIDANCE.items()
    }
    return {"load_s": load_s, "stages": stages, "end_to_end": e2e, "stage_sum": summarise(stages, steps_list)}


def time_shipped(path: Path, computes: list[str], steps_list: list[int], repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in computes:
        try:
            out[c] = shipped_one(path, c, steps_list if c == "fp32" else [min(steps_list)], repeats)
        except Exception as e:  # report, do not hide: a compute form that fails on the image path
            out[c] = {"error": f"{type(e).__name__}: {e}"}
            print(f"shipped compute={c}: FAILED {out[c]['error']}")
            continue
        e2e = out[c]["end_to_end"]
        print(f"shipped {c}: " + ", ".join(f"{k} {v['median_s']:.2f}s" for k, v in e2e.items()))
        gc.collect()
    return out


def workstation_one(
    export_dir: Path,
    vae: torch.nn.Module,
    encoder: Callable[[list[str]], np.ndarray],
    compute: str,
    steps_list: list[int],
    repeats: int,
) -> dict[str, Any]:
    """Stages of the exported workstation model loaded with one compute form, and one end-to-end time."""
    t = time.perf_counter()
    lm = load_model(export_dir, compute=compute)
    load_s = time.perf_counter() - t
    core = ImageCore(lm.model, vae, encoder)
    t = time.perf_counter()
    core.generate(PROMPT, ImageOptions(num_steps=1, height=SIDE, width=SIDE), seed=0)  # materializes
    first_s = time.perf_counter() - t
    stages = stage_times(core, steps_list, repeats)
    opts = ImageOptions(num_steps=min(steps_list), guidance_scale=GUIDANCE["on"], height=SIDE, width=SIDE)
    e2e = {
        f"{min(steps_list)}steps_guidance_on": {
            **median_s(lambda: core.generate(PROMPT, opts, seed=0), repeats),
            "how": "ImageCore.generate call (encode + denoise + decode)",
        }
    }
    return {
        "load_s": load_s,
        "first_call_s": first_s,
        "stages": stages,
        "end_to_end": e2e,
        "stage_sum": summarise(stages, steps_list),
    }


def time_workstation(
    export_dir: Path,
    encoder: Callable[[list[str]], np.ndarray],
    computes: list[str],
    steps_list: list[int],
    repeats: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    vae = load_vae(export_dir)
    for c in computes:
        out[c] = workstation_one(export_dir, vae, encoder, c, steps_list, repeats)
        stages = out[c]["stages"]
        print(
            f"workstation {c}: "
            + ", ".join(f"{k} {v['median_s']:.2f}s" for k, v in stages.items() if k.startswith("denoise"))
        )
        gc.collect()
    return out


def native512(shipped_cfg: Any, vae: torch.nn.Module, encoder: Callable, peak: dict, args: Any) -> dict:
    """Workstation denoiser on the native 512x512 latent grid (64x64x4, patch 2 = 1,024 tokens): FLOPs and
    roofline always; wall time (fp32, --repeats) only with --native512-time."""
    torch.manual_seed(0)
    model = UnifiedModel(workstation_config(shipped_cfg, native512=True)).eval()
    out: dict[str, Any] = {"label": "random init (latency only)", "tokens_per_image": tokens_per_image(model)}
    for g in GUIDANCE:
        f = denoiser_flops(model, g == "on")
        out[f"denoiser_step_guidance_{g}_gflop"] = f / 1e9
        out[f"denoiser_step_guidance_{g}_roofline_fp32_s"] = f / (peak["fp32_gflops"]["value"] * 1e9)
    steps = min(args.steps)
    if args.native512_time:
        stages = stage_times(ImageCore(model, vae, encoder), [steps], args.repeats)
        out["stages"] = stages
        out["stage_sum"] = summarise(stages, [steps])
        print("native512 fp32: " + ", ".join(f"{k} {v['median_s']:.2f}s" for k, v in stages.items()))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="shipped model dir (default: the shipped default)")
    p.add_argument("--steps", default="4,20,50")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--computes",
        default="fp32,bf16,int8",
        help="compute forms for the shipped model (all --steps for fp32, the fewest steps for the others)",
    )
    p.add_argument("--ws-computes", default="fp32", help="compute forms for the workstation preset")
    p.add_argument(
        "--native512-time", action="store_true", help="also time the native 512 latent grid (slow)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="tiny numbers for a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.computes, args.ws_computes = "2", 1, "fp32,bf16", "fp32"
        args.native512_time = False
    args.steps = [int(s) for s in str(args.steps).split(",")]
    args.computes = [c for c in args.computes.split(",") if c]
    args.ws_computes = [c for c in args.ws_computes.split(",") if c]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    shipped = resolve_model_path(args.model)
    peak = gemm_peak(args.repeats)
    print(f"GEMM: fp32 {peak['fp32_gflops']['value']:.0f}, bf16 {peak['bf16_gflops']['value']:.0f} GFLOP/s")

    lm = load_model(shipped)
    vae = load_vae(shipped)
    dec_flops = count_flops(lambda: vae.decode(torch.randn(1, vae.cfg.latent_channels, SIDE // 8, SIDE // 8)))
    ship_params = lm.model.parameter_split()
    ship_roof = roofline(lm.model, dec_flops, peak, ship_params["backbone"] + ship_params["heads/image"])
    shipped_cfg = lm.model.cfg
    del lm
    figures: dict[str, Any] = {
        "settings": {
            "prompt": PROMPT,
            "size": f"{SIDE}x{SIDE}",
            "steps": args.steps,
            "guidance": {k: f"scale {v:g}" for k, v in GUIDANCE.items()},
            "sampler": "euler, uniform spacing",
            "repeats": args.repeats,
            "threads": args.threads,
            "loadavg_1m_at_start": load_start,
            "quick": args.quick,
            "how_512": "denoiser on the trained 8x8 latent (64 tokens), bicubic resize to 64x64, VAE decode "
            "at 512x512 (ImageCore.decode); the 512 image has no more denoised detail than an 8x8 latent "
            "holds",
        },
        "gemm_peak": peak,
        "shipped": {
            "path": str(shipped),
            "label": "trained (shipped default, INT4 on disk)",
            "parameters": ship_params,
            "roofline": ship_roof,
            "sizes": dir_sizes(shipped),
        },
    }
    figures["shipped"]["timing"] = time_shipped(shipped, args.computes, args.steps, args.repeats)

    from arrowdiff.encoder import SentenceEncoder

    encoder = SentenceEncoder().load()
    embed = lambda t: encoder.encode(list(t))  # noqa: E731
    tmp = Path(tempfile.mkdtemp(prefix="ws-int4-"))
    try:
        export_dir = tmp / "workstation-image-int4"
        ws = export_workstation(shipped, shipped_cfg, export_dir, args.seed)
        ws["label"] = "random init (latency only)"
        ws["sizes"] = dir_sizes(export_dir)
        lm_ws = load_model(export_dir)
        ws_params = lm_ws.model.parameter_split()
        ws["roofline"] = roofline(
            lm_ws.model, dec_flops, peak, ws_params["backbone"] + ws_params["heads/image"]
        )
        del lm_ws
        gc.collect()
        ws["timing"] = time_workstation(export_dir, embed, args.ws_computes, args.steps, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures["workstation"] = ws
    figures["workstation_native512"] = native512(shipped_cfg, vae, embed, peak, args)
    gp = {k: peak[f"{k}_gflops"]["value"] for k in ("fp32", "bf16", "int8")}
    figures["cpu_note"] = (
        f"torch CPU capability {peak['cpu_capability']}: bf16 GEMM {gp['bf16']:.1f} GFLOP/s and int8 "
        f"_int_mm {gp['int8']:.1f} GOP/s against fp32 {gp['fp32']:.0f} GFLOP/s here: fp32 is the fast "
        "compute form on this machine"
    )
    figures["loadavg_1m_at_end"] = os.getloadavg()[0]
    figures["total_s"] = time.perf_counter() - t_start

    s4 = min(args.steps)
    ws_fp32 = ws["timing"].get("fp32") or next(iter(ws["timing"].values()))
    ws_c = "fp32" if "fp32" in ws["timing"] else args.ws_computes[0]
    r25 = ws_fp32["end_to_end"][f"{s4}steps_guidance_on"]["median_s"]
    ws_mb = ws["sizes"]["image_model_mb"]
    targets = [
        target(
            "R2.5",
            f"seconds for a 512x512 image, workstation preset (random init), {s4} steps, guidance on, {ws_c}",
            r25,
            "<",
            30.0,
            "s",
        ),
        target("R2.6", "INT4 image model size, workstation preset", ws_mb, "<", 200.0, "MB"),
    ]
    targets[1]["shipped_default_image_model_mb"] = figures["shipped"]["sizes"]["image_model_mb"]
    targets[1]["workstation_directory_total_mb"] = ws["sizes"]["directory_total_mb"]
    path = write_results("image_speed", figures, targets, results_dir=Path(args.out) if args.out else None)
    for t in targets:
        verdict = "met" if t["met"] else "NOT met"
        print(f"{t['id']}: {t['value']:.2f} {t['op']} {t['target']} {t['unit']} -> {verdict}")
    print(path)


if __name__ == "__main__":
    main()
