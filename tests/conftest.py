"""Shared fixtures: a tiny synthetic corpus (tokenizer + shards in the real format) and a tiny trained model.

Everything is built once per test session in a temporary directory, through the same code paths as the
real pipeline (``train_tokenizer``, ``write_shard``, ``load_manifest``, ``arrowdiff.training.train.main``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from arrowdiff.tokenizer import TextTokenizer
from arrowdiff.training.shards import MANIFEST_NAME, load_manifest, manifest_header, write_shard
from arrowdiff.training.tokenizer_train import train_tokenizer

# Highly repetitive so that a 2-layer, width-32 model learns it in tens of steps.
TEXT_DOCS = [
    "the cat sat on the mat. the dog sat on the log. the cat and the dog sat on the mat and the log.\n" * 6,
    "a bird sang in the tree. a frog sang in the pond. the bird and the frog sang all day long.\n" * 6,
] * 6
CODE_DOCS = [
    "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n" * 5,
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n    else:\n        pass\n" * 5,
] * 6
TOKENIZER_VOCAB = 300
TINY_MODEL_SEQ_LEN = 64  # context of the shared trained model (room for prompt + middle + suffix)


def pytest_configure(config: pytest.Config) -> None:
    # Tiny models gain nothing from intra-op threads; on a busy 2-core machine OpenMP spinning makes a
    # width-32 forward pass ~40x slower. One thread also keeps CPU results bitwise reproducible.
    torch.set_num_threads(1)


def require_q4avx2() -> None:
    """Skip a test that needs the q4avx2 C++ extension when it cannot be built here; in CI (which installs
    g++ and ninja) a missing kernel is a failure, not a skip."""
    from arrowdiff.weights import q4avx2

    ok, why = q4avx2.kernel_status()
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"the q4avx2 kernel is required in CI: {why}")
        pytest.skip(f"q4avx2 kernel unavailable: {why}")


def build_tiny_data(root: Path) -> Path:
    """Write ``root/tokenizer.json`` and ``root/shards/`` (4 shards + manifest.json); return the shard dir.

    train.py reads the tokenizer from ``<data>/../tokenizer.json``, as laid out by ``make data``.
    """
    root.mkdir(parents=True, exist_ok=True)
    tok_path = root / "tokenizer.json"
    TextTokenizer(train_tokenizer(TEXT_DOCS + CODE_DOCS, vocab_size=TOKENIZER_VOCAB)).to_file(tok_path)
    tok = TextTokenizer.from_file(tok_path)
    shard_dir = root / "shards"
    docs = {"text": TEXT_DOCS, "code": CODE_DOCS}
    shards = {}
    for split in ("train", "val"):
        for modality, group in docs.items():
            chosen = group if split == "train" else group[:2]
            name = f"{split}_{modality}.bin"
            n_tokens, digest = write_shard(shard_dir / name, tok.encode_batch(chosen), tok.eot_id)
            shards[f"{split}_{modality}"] = {
                "file": name,
                "split": split,
                "modality": modality,
                "tokens": n_tokens,
                "documents": len(chosen),
                "sha256": digest,
            }
    manifest = {
        **manifest_header(tok, tok_path, seed=0),
        "shards": shards,
        "sources": {"synthetic": {"modality": "text"}},
    }
    (shard_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    load_manifest(shard_dir)  # the fixture must satisfy the real reader
    return shard_dir


def train_argv(data: Path, out: Path, *extra: str, steps: int = 60, seq_len: int = 32) -> list[str]:
    """Command-line arguments of a tiny CPU training run (pass more flags in ``extra``)."""
    return [
        "--preset", "tiny", "--data", str(data), "--out", str(out), "--steps", str(steps),
        "--batch-size", "8", "--seq-len", str(seq_len), "--lr", "3e-3", "--warmup", "5",
        "--eval-windows", "4", *extra,
    ]  # fmt: skip


def read_log(out: Path) -> list[dict]:
    """The records of ``<out>/log.jsonl``."""
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shard directory of the tiny synthetic corpus (its tokenizer.json is in the parent directory)."""
    return build_tiny_data(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def tiny_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run directory of a finished tiny mdlm training run (checkpoint/, log.jsonl, model/)."""
    from arrowdiff.training.train import main

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    assert main(train_argv(tiny_data, out, steps=60, seq_len=TINY_MODEL_SEQ_LEN)) == 0
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_run: Path) -> Path:
    """An exported tiny model directory (metadata.json, Parquet components, tokenizer.json)."""
    return tiny_run / "model"


@pytest.fixture(scope="session")
def speech_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny speech data folder in the real layout (synthetic audio of three speakers)."""
    from speech_fixtures import write_speech_folder

    return write_speech_folder(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="session")
def speech_run(tiny_data: Path, speech_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny joint text + speech run (16 steps) whose model/ has the voice model and a random vocoder."""
    from arrowdiff.speech.vocoder import Vocoder, tiny_vocoder_config
    from arrowdiff.speech.vocoder_io import save_vocoder
    from arrowdiff.training.train import main

    tmp = tmp_path_factory.mktemp("speech_run")
    torch.manual_seed(0)
    vocoder = save_vocoder(
        Vocoder(tiny_vocoder_config()), tmp / "vocoder", training={"note": "random (test)"}
    )
    out = tmp / "run"
    argv = train_argv(tiny_data, out, "--speech", str(speech_folder), "--vocoder", str(vocoder), steps=16)
    assert main([*argv, "--speech-batch-size", "8", "--eval-every", "16"]) == 0
    return out
