"""``arrowdiff memory``: add, search, list, delete, verify, compact; one-line errors with exit status 2.

All but one test run ``arrowdiff.memory.cli_memory.main`` with a deterministic hashing embedder; the last
goes through ``arrowdiff.cli.main`` with the real MiniLM encoder and the default (per-user) store folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from arrowdiff.cli import main as arrowdiff_main
from arrowdiff.memory import ArrowStorage
from arrowdiff.memory.cli_memory import main as memory_main


def hash_embed(texts: list[str]) -> np.ndarray:
    """One fixed random vector per word, summed: texts sharing words are similar."""
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            out[i] += np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return out


def run(capsys: pytest.CaptureFixture[str], store: Path, *argv: str) -> tuple[int, str, str]:
    code = memory_main(["--store", str(store), *argv], embedder=hash_embed)
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_search_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, tmp_path, "add", "the cat sat on the mat", "--meta", "source=notes", "--meta", "n=1"
    )
    cat = out.strip()
    assert code == 0 and len(cat) == 32
    run(capsys, tmp_path, "add", "stock markets fell sharply today")
    run(capsys, tmp_path, "add", "a lora for python code", "--kind", "adaptation", "--payload", "adapters/py")
    assert ArrowStorage(tmp_path).get(cat).metadata == {"source": "notes", "n": "1"}

    code, out, _ = run(capsys, tmp_path, "search", "where is the cat", "-k", "2")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 and lines[0].endswith("  the cat sat on the mat")
    assert float(lines[0].split()[0]) > float(lines[1].split()[0])
    for method in ("hopfield", "index"):
        _, out, _ = run(capsys, tmp_path, "search", "the cat", "-k", "1", "--method", method)
        assert out.strip().endswith("the cat sat on the mat")

    code, out, _ = run(capsys, tmp_path, "list")
    lines = out.splitlines()
    assert (
        code == 0 and len(lines) == 3 and "adaptation" in lines[0] and lines[-1].startswith(cat)
    )  # newest first
    _, out, _ = run(capsys, tmp_path, "list", "--kind", "adaptation", "--limit", "5")
    assert len(out.splitlines()) == 1 and "a lora for python code" in out

    code = memory_main(["delete", cat, "--store", str(tmp_path)], embedder=hash_embed)  # --store after it too
    out = capsys.readouterr().out
    assert code == 0 and out.strip() == f"deleted {cat}"
    _, out, _ = run(capsys, tmp_path, "list")
    assert cat not in out and len(out.splitlines()) == 2
    code, out, _ = run(capsys, tmp_path, "compact")
    assert code == 0 and "2 memories" in out


def test_long_text_is_truncated_in_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, tmp_path, "add", "word " * 100)
    _, out, _ = run(capsys, tmp_path, "list")
    assert out.rstrip().endswith("...") and len(out.splitlines()[0]) < 140


def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path)
    cases = [
        (["memory", "--store", store, "delete", "0123"], "no memory with id '0123'"),
        (["memory", "--store", store, "add", "  "], "is empty"),
        (
            ["memory", "--store", store, "add", "x", "--meta", "novalue"],
            "--meta 'novalue' must look like key=value",
        ),
        (["memory", "--store", store, "search", "x", "-k", "0"], "k=0 must be an integer >= 1"),
        (["memory", "--store", store, "list", "--limit", "-1"], "--limit -1 must be >= 0"),
    ]
    for argv, message in cases:
        assert arrowdiff_main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("arrowdiff: error: ") and message in err, err
    with pytest.raises(SystemExit) as e:  # argparse's own usage errors exit 2 as well
        arrowdiff_main(["memory", "--store", store, "search", "x", "--method", "fuzzy"])
    assert e.value.code == 2


def test_verify_reports_a_damaged_segment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, tmp_path, "add", "first memory")
    run(capsys, tmp_path, "add", "second memory")
    victim = sorted((tmp_path / "segments").glob("seg-*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    code, out, err = run(capsys, tmp_path, "list")
    assert code == 0 and "second memory" in out and "first memory" not in out
    assert (
        err.count("\n") == 1
        and err.startswith("arrowdiff: warning: damaged memory segment")
        and victim.name in err
    )
    code, out, _ = run(capsys, tmp_path, "verify")
    assert code == 1 and f"damaged: {victim}" in out
    run(capsys, tmp_path, "compact")
    code, out, _ = run(capsys, tmp_path, "verify")
    assert code == 0 and "1 memories" in out and (tmp_path / "quarantine" / victim.name).exists()


def test_default_store_and_real_minilm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARROWDIFF_HOME", str(tmp_path))
    for text in ("The cat is sleeping on the sofa.", "Interest rates rose again this quarter."):
        assert arrowdiff_main(["memory", "add", text]) == 0
    capsys.readouterr()
    assert arrowdiff_main(["memory", "search", "a kitten naps on the couch", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("The cat is sleeping on the sofa.")
    assert float(lines[0].split()[0]) > float(lines[1].split()[0]) + 0.2
    assert len(list((tmp_path / "memory" / "segments").glob("seg-*.parquet"))) == 2
