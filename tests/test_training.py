"""training/: the real data pipeline and training loop on a tiny synthetic corpus (see conftest.py):
the loss falls, resuming is exact, the export is a loadable model directory, and DDP runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import TINY_MODEL_SEQ_LEN, read_log, train_argv
from safetensors.torch import load_file

from arrowdiff.diffusion_core import DiffusionCore, SamplingOptions
from arrowdiff.engine import ArrowEngine
from arrowdiff.loading import load_model
from arrowdiff.training.train import main as train_main


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


@pytest.mark.parametrize("objective", ["mdlm", "ar"])
def test_tiny_training_loss_falls(objective: str, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train_main(train_argv(tiny_data, out, "--objective", objective, steps=60)) == 0
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, 61))
    losses = [r["loss"] for r in log]
    assert all(math.isfinite(v) for v in losses)
    first, last = mean(losses[:10]), mean(losses[-10:])
    assert last < 0.8 * first, (first, last)
    # the final step is evaluated on both validation shards
    assert {"val_text", "val_code"} <= set(log[-1])
    meta = json.loads((out / "model" / "metadata.json").read_text())
    assert meta["model_type"] == ("unified_diffusion" if objective == "mdlm" else "autoregressive_baseline")


def test_ar_run_is_served_by_the_ar_path(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ar"
    train_main(train_argv(tiny_data, out, "--objective", "ar", steps=4))
    engine = ArrowEngine.from_pretrained(out / "model")
    assert engine.ar is not None and engine.diffusion is None
    text = engine.generate("the cat", max_new_tokens=6, mode="ar", seed=0)
    assert isinstance(text, str)
    assert text == engine.generate("the cat", max_new_tokens=6, mode="ar", seed=0)


def test_resume_is_exact(tiny_data: Path, tmp_path: Path) -> None:
    n = 16
    a, b = tmp_path / "a", tmp_path / "b"
    common = ("--ckpt-every", "5", "--no-export")
    train_main(train_argv(tiny_data, a, *common, steps=n))
    train_main(train_argv(tiny_data, b, *common, "--stop-at", str(n // 2), steps=n))
    state = json.loads((b / "checkpoint" / "state.json").read_text())
    assert state["step"] == n // 2
    assert not (b / "model").exists()  # stopped early: not exported
    train_main(train_argv(tiny_data, b, *common, "--resume", steps=n))

    for f in ("model.safetensors", "optimizer.safetensors"):
        ta, tb = load_file(str(a / "checkpoint" / f)), load_file(str(b / "checkpoint" / f))
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{f}: {k} differs after resume"
    log_a, log_b = read_log(a), read_log(b)
    assert [r["step"] for r in log_b] == list(range(1, n + 1))  # each step logged once
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]
    sa = json.loads((a / "checkpoint" / "state.json").read_text())
    sb = json.loads((b / "checkpoint" / "state.json").read_text())
    assert (sa["step"], sa["tokens_seen"]) == (sb["step"], sb["tokens_seen"]) == (n, n * 8 * 32)

    # resuming a finished run does nothing (and does not crash)
    before = (b / "checkpoint" / "model.safetensors").read_bytes()
    assert train_main(train_argv(tiny_data, b, *common, "--resume", steps=n)) == 0
    assert (b / "checkpoint" / "model.safetensors").read_bytes() == before
    assert len(read_log(b)) == n


def test_export_metadata(tiny_run: Path) -> None:
    meta = json.loads((tiny_run / "model" / "metadata.json").read_text())
    assert meta["model_type"] == "unified_diffusion"
    assert meta["diffusion_config"] == {
        "hidden_dim": 32, "num_layers": 2, "num_heads": 2, "intermediate_dim": 64, "cond_dim": 32,
        "vocab_size": meta["model_config"]["text"]["vocab_size"],
    }  # fmt: skip
    sched = meta["scheduler"]
    assert sched["type"] == "masked_absorbing"
    assert (sched["num_train_steps"], sched["num_inference_steps"]) == (0, 64)
    assert meta["supported_modalities"] == ["text", "code"]
    assert meta["consistency_distilled"] is False
    assert meta["quantization"]["bit_width"] == 16
    assert meta["context_length"] == TINY_MODEL_SEQ_LEN
    training = meta["training"]
    assert training["command"].startswith("arrowdiff train ") and "--preset tiny" in training["command"]
    assert training["seed"] == 0
    assert training["tokens_seen"] == 60 * 8 * TINY_MODEL_SEQ_LEN
    assert set(training["final_eval"]) == {"val_text", "val_code"}
    assert training["data"]["tokenizer_sha256"]  # provenance of the data is recorded


def test_exported_model_loads_and_matches_the_checkpoint(tiny_run: Path) -> None:
    loaded = load_model(tiny_run / "model")
    assert loaded.model.cfg.backbone.dim == 32 and loaded.context_length == TINY_MODEL_SEQ_LEN
    ckpt = load_file(str(tiny_run / "checkpoint" / "model.safetensors"))
    state = loaded.model.state_dict()
    assert set(ckpt) == set(state)
    for k, v in ckpt.items():  # exported at 16 bits: fp16 rounding only
        torch.testing.assert_close(state[k], v, rtol=2e-3, atol=1e-4)
    engine = ArrowEngine(diffusion=loaded)
    for modality in ("text", "code"):
        assert isinstance(engine.diffuse("the", modality=modality, num_steps=4, length=8, seed=0), str)
    # infilling keeps the prefix and suffix token ids exactly
    tok = loaded.tokenizer
    core = DiffusionCore(loaded.model, tok, loaded.context_length)
    prefix, suffix = tok.encode("the cat sat"), tok.encode(" on the mat.")
    ids = core.sample_ids(prefix, 6, suffix, "text", SamplingOptions(num_steps=4), seed=0, batch=3)
    assert ids.shape == (3, len(prefix) + 6 + len(suffix))
    assert (ids[:, : len(prefix)] == torch.tensor(prefix)).all()
    assert (ids[:, len(prefix) + 6 :] == torch.tensor(suffix)).all()
    assert not (ids == tok.mask_id).any()


HAS_GLOO = dist.is_available() and dist.is_gloo_available()


@pytest.mark.skipif(not HAS_GLOO and not os.environ.get("CI"), reason="needs torch.distributed with gloo")
def test_ddp_two_process_gloo_run(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [
        *launcher,
        "-m",
        "arrowdiff.training.train",
        *train_argv(tiny_data, out, "--eval-windows", "2", steps=4),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and state["tokens_seen"] == 4 * 8 * 32
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # only rank 0 writes the log
    assert all(math.isfinite(r["loss"]) for r in log)
    assert (out / "model" / "metadata.json").exists()
