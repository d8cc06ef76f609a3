"""The ArrowQuant weight format: load time and memory against safetensors, size and quality per bit width,
and matmul speed of the compute forms. Writes `benchmarks/results/weights.json`. From the repository root:

    python -m benchmarks.weights [--model DIR] [--windows 64] [--t-samples 8] [--runs 7] [--quick]

a. Load: the default model's tensors, dequantized to fp32, exported once as ArrowQuant at bits=32 and once
   as one .safetensors file (the same bytes). Each load runs in a fresh Python process (imports done
   before the clock starts; page cache warm: the files are read once first); median over --runs.
b. Size on disk of the model's component files at fp16, INT8 (shipped), INT4 and INT2 (RTN and HQQ).
c. Quality: MDLM NELBO bound (benchmarks/text_quality.py's estimator) on the SAME validation windows, times
   and masks for every variant, so differences are paired. The reference is the shipped INT8 master
   (no fp32 weights are shipped); the INT8 rounding error against fp32 is estimated from its scales.
d. Matmul: one (rows x 1024) @ (1024 x 4096) linear in each compute form, 2 threads.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from arrowdiff.loading import load_model, resolve_model_path
from arrowdiff.training.batches import fixed_windows
from arrowdiff.training.shards import open_shard
from arrowdiff.weights import (
    QuantLinear,
    QuantPolicy,
    StoredTensor,
    dequantize,
    load_model_dir,
    read_component,
    save_model_dir,
    write_component,
)
from arrowdiff.weights.requantize import requantize_model_dir
from benchmarks.common import target, timeit, write_results
from benchmarks.text_quality import MODALITIES, fig, nelbo_per_window

LOAD_MODES = ("ours_open", "ours_full", "ours_full_unverified", "st_open", "st_open_full", "st_load_file")
# (name, bits, group_size, method); "int8" is the shipped master itself
VARIANTS = [("int8", 8, 64, "rtn"), ("int4_rtn", 4, 64, "rtn"), ("int4_hqq", 4, 64, "hqq"),
            ("int2_rtn", 2, 64, "rtn"), ("int2_hqq", 2, 64, "hqq"), ("int2_rtn_g32", 2, 32, "rtn"),
            ("int2_hqq_g32", 2, 32, "hqq")]  # fmt: skip


def rss_bytes() -> dict[str, int]:
    """Resident memory of this process: total, anonymous (private copies) and file-backed (mapped page
    cache), from /proc/self/status."""
    kb = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in Path("/proc/self/status").open())
          if k in ("VmRSS", "RssAnon", "RssFile")}  # fmt: skip
    return {"rss": kb["VmRSS"] * 1024, "anon": kb["RssAnon"] * 1024, "file": kb["RssFile"] * 1024}


def load(mode: str, path: str) -> Any:
    """One load of ``path`` the way ``mode`` says; returns what it holds (kept alive while measured)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if mode == "ours_open":
        held: Any = load_model_dir(Path(path)).components
    elif mode in ("ours_full", "ours_full_unverified"):
        m = load_model_dir(Path(path))
        verify = mode == "ours_full"
        held = [st.to_tensor() if verify else dequantize(st.quantized()) for c in m.components.values()
                for st in c.values()]  # fmt: skip
    elif mode == "st_load_file":
        held = load_file(path)
    else:
        with safe_open(path, framework="pt") as f:
            held = [f.get_tensor(k) for k in f.keys()] if mode == "st_open_full" else list(f.keys())
    return held


def child(mode: str, path: str, warm_path: str) -> None:
    """One load in this fresh process, after the same load of a 1-tensor file (so that one-time library
    initialisation and code-page faults are not counted) and a gc.collect(); prints {"s", "*_growth"}
    as JSON and exits."""
    load(mode, warm_path)
    gc.collect()  # a process at rest: no full collection of the import-time heap inside the timing
    rss0, t0 = rss_bytes(), time.perf_counter()
    held = load(mode, path)
    s, rss1 = time.perf_counter() - t0, rss_bytes()
    print(json.dumps({"s": s, "n": len(held), **{f"{k}_growth": rss1[k] - rss0[k] for k in rss0}}))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: nothing after the measurement matters


def dir_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*.parquet"))


def measure_loads(src: Path, tmp: Path, runs: int) -> dict[str, Any]:
    """a. Load time and RSS growth of the same fp32 weights through ours and safetensors."""
    from safetensors.torch import save_file

    stored = load_model_dir(src)
    comps = {c: stored.state_dict(c) for c in stored.components}
    ours, st_file = tmp / "fp32", tmp / "model.safetensors"
    save_model_dir(ours, comps, stored.metadata, QuantPolicy(bits=32))
    save_file({f"{c}/{k}": v for c, sd in comps.items() for k, v in sd.items()}, st_file)
    warm, warm_st = tmp / "warm", tmp / "warm.safetensors"  # 1-tensor files to warm the code paths
    save_model_dir(warm, {"c": {"w": torch.ones(4, 4)}}, {}, QuantPolicy(bits=32))
    save_file({"c/w": torch.ones(4, 4)}, warm_st)
    total = dir_bytes(ours)
    for f in [*ours.rglob("*.parquet"), st_file]:  # warm the page cache
        f.read_bytes()
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in LOAD_MODES}
    for _ in range(runs):  # round-robin, so that drift hits every mode alike
        for mode in LOAD_MODES:
            path, warm_path = (st_file, warm_st) if mode.startswith("st_") else (ours, warm)
            cmd = [sys.executable, "-m", "benchmarks.weights", "--child", mode, str(path), str(warm_path)]
            out = subprocess.run(
                cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent
            )
            samples[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    res: dict[str, Any] = {"files_bytes": {"arrowquant_fp32": total, "safetensors": st_file.stat().st_size}}
    for mode, rows in samples.items():
        res[mode] = {
            "median_ms": statistics.median(r["s"] for r in rows) * 1e3,
            "min_ms": min(r["s"] for r in rows) * 1e3,
            **{
                f"{k}_growth_bytes": statistics.median(r[f"{k}_growth"] for r in rows)
                for k in ("rss", "anon", "file")
            },
            "runs": len(rows),
        }
    return res


def make_variants(src: Path, tmp: Path, variants: list[tuple[str, int, int, str]]) -> dict[str, Path]:
    """b. The model re-quantized per variant (plus fp16); the shipped dir stands for "int8"."""
    dirs = {"int8": src}
    for name, bits, gs, method in [("fp16", 16, 64, "rtn"), *variants]:
        if name != "int8":
            dirs[name] = tmp / name
            requantize_model_dir(src, dirs[name], QuantPolicy(bits=bits, group_size=gs, method=method))
    return dirs


def rtn_error2(st: StoredTensor, w: torch.Tensor) -> float:
    """Expected squared RTN rounding error of ``st`` against its unknown original: s^2/12 per value, 0 in
    all-zero groups (stored exactly, with the placeholder scale 1)."""
    q = st.quantized()
    groups = F.pad(w.reshape(q.scales.shape[0], -1), (0, q.pad)).reshape(*q.scales.shape, -1)
    live = groups.abs().amax(-1) > 0
    return float((q.scales.float().square() * live).sum()) * st.group_size / 12


def weight_errors(dirs: dict[str, Path]) -> dict[str, Any]:
    """Relative weight error (Frobenius, all quantized matrices) of each variant against the INT8 master,
    and the estimated INT8-vs-fp32 error: RTN rounding is uniform in +-s/2, so E|e|^2 = s^2/12 per value."""
    ref = load_model_dir(dirs["int8"])
    names = [(c, n) for c, t in ref.components.items() for n, st in t.items() if st.bits == 8]
    w8 = {cn: ref.components[cn[0]][cn[1]].to_tensor(torch.float32) for cn in names}
    norm2 = sum(float(w.square().sum()) for w in w8.values())
    est = sum(rtn_error2(ref.components[c][n], w8[(c, n)]) for c, n in names)
    out: dict[str, Any] = {"int8_vs_fp32_estimate": fig(math.sqrt(est / norm2), "relative (Frobenius)")}
    for name, d in dirs.items():
        if name != "int8":
            m = load_model_dir(d)
            e2 = sum(float((m.components[c][n].to_tensor(torch.float32) - w8[(c, n)]).square().sum())
                     for c, n in names)  # fmt: skip
            out[name] = fig(math.sqrt(e2 / norm2), "relative (Frobenius) vs INT8 master")
    return out


def quality(dirs: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    """c. Paired NELBO bounds; delta = ppl / ppl_ref - 1 with its paired standard error."""
    per: dict[str, np.ndarray] = {}
    L = 0
    for name, d in dirs.items():
        lm = load_model(d)
        L = lm.context_length
        x = {m: fixed_windows(open_shard(args.data, "val", m), L, args.windows) for m in MODALITIES}
        per[name] = np.stack([nelbo_per_window(lm, x[m], m, args.t_samples, args.seed) for m in MODALITIES])
        print(f"  {name:14} NELBO {per[name].mean():.4f}", flush=True)
    ref = per["int8"]
    rows: dict[str, Any] = {}
    for name, v in per.items():
        row: dict[str, Any] = {}
        for i, m in enumerate([*MODALITIES, "combined"]):
            a, b = (v[i], ref[i]) if m != "combined" else (v.reshape(-1), ref.reshape(-1))
            diff = a - b
            se = float(diff.std(ddof=1) / math.sqrt(len(diff)))
            delta = math.exp(diff.mean()) - 1
            row[m] = {"nelbo": float(a.mean()), "ppl_bound": math.exp(a.mean()),
                      "ppl_delta": delta, "ppl_delta_se": (1 + delta) * se, "windows": len(a)}  # fmt: skip
        rows[name] = row
    settings = {"windows_per_modality": args.windows, "window_length": L, "t_samples": args.t_samples,
                "seed": args.seed, "data": args.data}  # fmt: skip
    return {"settings": settings, "variants": rows}


def linear_forms(tmp: Path, rows: int, k: int, n: int) -> dict[str, Callable[[], torch.Tensor]]:
    """One (rows x k) @ (k x n) linear per compute form, weights prepared (materialized) up front."""
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(n, k, generator=g) / k**0.5, torch.randn(rows, k, generator=g)
    st = {}
    for bits in (8, 4):
        write_component(tmp / f"w{bits}.parquet", {"w": w}, QuantPolicy(bits=bits, group_size=64, keep=()))
        st[bits] = read_component(tmp / f"w{bits}.parquet")["w"]
    q4, wb, xb = st[4].quantized(), w.bfloat16(), x.bfloat16()
    i8, i4 = QuantLinear(st[8], compute="int8"), QuantLinear(st[4], compute="int4pack")
    i8.materialize(), i4.materialize()
    return {"fp32": lambda: F.linear(x, w), "bf16": lambda: F.linear(xb, wb),
            "int4_dequant_every_call": lambda: F.linear(x, dequantize(q4)),
            "int8_w8a8": lambda: i8(x), "int4pack_bf16": lambda: i4(x)}  # fmt: skip


def matmul_speed(tmp: Path, shapes: list[tuple[int, int, int]]) -> dict[str, Any]:
    """d. Median ms of one linear (rows x in) @ (in x out) in each compute form."""
    out: dict[str, Any] = {}
    for rows, k, n in shapes:
        res = {}
        with torch.inference_mode():
            for name, fn in linear_forms(tmp, rows, k, n).items():
                reps = 10 if "dequant" in name else (50 if rows == 1 else 20)
                res[name] = timeit(fn, repeats=reps, warmup=3)
        out[f"{rows}x{k}x{n}"] = res
    return out


def print_summary(figures: dict[str, Any]) -> None:
    ld = figures["load"]
    print(f"\n{'load (fresh process)':24} {'median ms':>10} {'RSS growth MB':>14}")
    for m in LOAD_MODES:
        print(f"{m:24} {ld[m]['median_ms']:10.1f} {ld[m]['rss_growth_bytes'] / 1e6:14.1f}")
    print(f"\n{'variant':14} {'MB':>7} {'bits/param':>10} {'w err':>7} {'ppl<=':>8} {'delta':>8} {'+-se':>7}")
    for name, s in figures["size"].items():
        q = figures["quality"]["variants"].get(name, {}).get("combined")
        we = figures["weight_error"]
        err = (we["int8_vs_fp32_estimate"] if name == "int8" else we.get(name, {})).get("value", 0.0)
        line = f"{name:14} {s['bytes'] / 1e6:7.2f} {s['bits_per_param']:10.2f} {err:7.4f}"
        if q:
            line += f" {q['ppl_bound']:8.3f} {q['ppl_delta']:+8.4f} {q['ppl_delta_se']:7.4f}"
        print(line)
    print(f"\n{'matmul ms (median)':22}" + "".join(f"{s:>16}" for s in figures["matmul"]))
    for form in next(iter(figures["matmul"].values())):
        print(f"{form:22}" + "".join(f"{r[form]['median_ms']:16.3f}" for r in figures["matmul"].values()))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        default="base-int8",
        help="the master the variants are quantized from (default: the shipped INT8 master)",
    )
    p.add_argument("--data", default="data/shards")
    p.add_argument("--windows", type=int, default=64, help="validation windows per modality")
    p.add_argument("--t-samples", type=int, default=8, help="Monte-Carlo times per window")
    p.add_argument("--runs", type=int, default=7, help="fresh processes per load measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="tiny numbers for a smoke run")
    p.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "WARM"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(*args.child)
    if args.quick:
        args.windows, args.t_samples, args.runs = 2, 2, 2
    torch.set_num_threads(args.threads)
    src, t_start, load_before = resolve_model_path(args.model), time.perf_counter(), os.getloadavg()
    variants = [VARIANTS[i] for i in (0, 1, 3)] if args.quick else VARIANTS
    with tempfile.TemporaryDirectory(prefix="arrowdiff-weights-") as tmp_name:
        tmp = Path(tmp_name)
        print("a. load time and memory", flush=True)
        load = measure_loads(src, tmp, args.runs)
        print("b. variants and sizes", flush=True)
        t0 = time.perf_counter()
        dirs = make_variants(src, tmp, variants)
        quantize_s = time.perf_counter() - t0
        params = sum(
            math.prod(st.shape) for c in load_model_dir(src).components.values() for st in c.values()
        )
        size = {
            n: {"bytes": dir_bytes(d), "bits_per_param": 8 * dir_bytes(d) / params} for n, d in dirs.items()
        }
        size["fp32"] = {"bytes": load["files_bytes"]["arrowquant_fp32"],
                        "bits_per_param": 8 * load["files_bytes"]["arrowquant_fp32"] / params}  # fmt: skip
        werr = weight_errors(dirs)
        print("c. quality (paired NELBO)", flush=True)
        qual = quality({n: d for n, d in dirs.items() if n != "fp16"}, args)
        print("d. matmul speed", flush=True)
        mm = matmul_speed(tmp, [(1, 1024, 4096), (64, 1024, 4096)])
    v = qual["variants"]
    best = {b: min((n for n in v if n.startswith(f"int{b}_") and "g32" not in n),
                   key=lambda n: v[n]["combined"]["ppl_delta"]) for b in (4, 2)}  # fmt: skip
    best_g32 = min(v, key=lambda n: v[n]["combined"]["ppl_delta"] if n.startswith("int2") else math.inf)
    figures = {
        "model": str(src),
        "parameters": params,
        "reference": "the shipped INT8 master (group 64, RTN): its fp32 weights are not shipped; see "
        "weight_error.int8_vs_fp32_estimate for INT8's rounding error (uniform-error model from its scales)",
        "load": load,
        "load_note": "ours_open: load_model_dir only (lazy views into the mmap); ours_full: plus "
        "to_tensor() of every tensor (checksums verified, new fp32 tensors); ours_full_unverified: "
        "dequantize() without checksums; st_open: safe_open + keys; st_open_full: + get_tensor of all; "
        "st_load_file: load_file. safetensors 0.8 returns tensors backed by its mmap (no bytes read or "
        "copied), so load_file is lazy too. Each run: fresh process, imports done, the same load of a "
        "1-tensor file first (library warm-up), gc.collect(), then the timed load; page cache warm.",
        "size": size,
        "weight_error": werr,
        "quality": qual,
        "best_method": {"int4": best[4], "int2_group64": best[2], "int2_any_group": best_g32},
        "matmul": mm,
        "timing": {
            "quantize_variants_s": fig(quantize_s, "s"),
            "total_s": fig(time.perf_counter() - t_start, "s"),
        },
        "settings": {
            "threads": args.threads,
            "runs": args.runs,
            "quick": args.quick,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "loadavg_1_5_15_before_after": [load_before, os.getloadavg()],
        },
    }
    ratio = load["ours_open"]["median_ms"] / load["st_load_file"]["median_ms"]
    zc = load["ours_open"]["rss_growth_bytes"] / load["files_bytes"]["arrowquant_fp32"]
    load["ratios"] = {
        "open_vs_load_file": ratio,
        "open_vs_safe_open_keys": load["ours_open"]["median_ms"] / load["st_open"]["median_ms"],
        "full_vs_safe_open_get_all": load["ours_full"]["median_ms"] / load["st_open_full"]["median_ms"],
    }
    targets = [
        target("load_vs_safetensors", "load_model_dir (lazy, zero-copy) / safetensors load_file (lazy mmap "
               "in safetensors 0.8), same fp32 weights, fresh process, median", ratio, "<=", 1.5, "x"),
        target("zero_copy_rss_fraction", "RSS growth after load_model_dir / file bytes", zc, "<=", 0.10,
               "fraction"),
        target("int4_ppl_delta", f"NELBO ppl bound / INT8 ref - 1, best INT4 ({best[4]})",
               v[best[4]]["combined"]["ppl_delta"], "<=", 0.03, "fraction"),
        target("int2_ppl_delta", f"NELBO ppl bound / INT8 ref - 1, best INT2 ({best_g32})",
               v[best_g32]["combined"]["ppl_delta"], "<=", 0.15, "fraction"),
    ]  # fmt: skip
    path = write_results("weights", figures, targets, results_dir=Path(args.out) if args.out else None)
    print_summary(figures)
    for t in targets:
        print(f"{t['id']}: {t['value']:.4f} {t['op']} {t['target']} -> {'met' if t['met'] else 'NOT met'}")
    print(path)


if __name__ == "__main__":
    main()
