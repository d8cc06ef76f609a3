"""Did joint training (memories, images) cost the shipped model text quality? (issue 6 part 5)

Writes `benchmarks/results/text_regression.json`. Run from the repository root:

    python -m benchmarks.text_regression [--windows 64] [--t-samples 8]

Scores, on the SAME validation windows with the same stratified times (the NELBO upper bound of MDLM, as in
`text_quality.py`), the shipped default (INT4: text + code + memory + image on one backbone) against
`base-int8` (the text/code-only master the previous default was quantised from) and reports the AR
baseline's perplexity beside them. The default saw more tokens than base-int8 (its continued training is
in its metadata.json), so this is a regression check, not an equal-compute comparison: R1.5's
equal-compute figure stays in `text_quality.json`.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
import torch

from arrowdiff.loading import load_model
from arrowdiff.training.batches import fixed_windows
from arrowdiff.training.shards import open_shard
from benchmarks.common import target, write_results
from benchmarks.text_quality import MODALITIES, ar_window_ce, fig, model_facts, nelbo_per_window


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--default", default="default")
    p.add_argument("--reference", default="base-int8")
    p.add_argument("--ar", default="ar-baseline")
    p.add_argument("--data", default="data/shards")
    p.add_argument("--windows", type=int, default=64)
    p.add_argument("--t-samples", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = {
        name: load_model(path) for name, path in (("default", args.default), ("reference", args.reference))
    }
    ar = load_model(args.ar)
    seq = models["default"].context_length
    figures: dict[str, Any] = {
        "models": {k: model_facts(v) for k, v in models.items()},
        "ar": model_facts(ar),
    }
    rows: dict[str, Any] = {}
    with torch.no_grad():
        for m in MODALITIES:
            x = fixed_windows(open_shard(args.data, "val", m), seq, args.windows)
            row = {}
            for name, lm in models.items():
                nelbo = nelbo_per_window(lm, x, m, args.t_samples, seed=0)
                row[name] = fig(
                    float(math.exp(nelbo.mean())), "perplexity (NELBO bound)", nats=float(nelbo.mean())
                )
            ce = ar_window_ce(ar, fixed_windows(open_shard(args.data, "val", m), seq + 1, args.windows), m)
            row["ar_baseline"] = fig(float(math.exp(np.mean(ce))), "perplexity")
            row["default_vs_reference"] = fig(row["default"]["value"] / row["reference"]["value"], "x")
            rows[m] = row
    figures["validation"] = rows
    figures["windows"], figures["t_samples"], figures["seq_len"] = args.windows, args.t_samples, seq
    ratio = float(np.mean([rows[m]["default_vs_reference"]["value"] for m in MODALITIES]))
    targets = [
        target(
            "text_no_regression",
            "default / base-int8 perplexity bound, mean of text and code",
            ratio,
            "<=",
            1.0,
            "x",
        )
    ]
    print(write_results("text_regression", figures, targets))
    for m in MODALITIES:
        print(m, {k: round(v["value"], 3) for k, v in rows[m].items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
