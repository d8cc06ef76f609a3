"""Tests for benchmarks/common.py: target logic and the results-file round trip."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "common.py"
_SPEC = importlib.util.spec_from_file_location("bench_common", _PATH)
common = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(common)


@pytest.mark.parametrize(
    ("op", "value", "met"),
    [
        ("<=", 1.0, True),
        ("<=", 2.0, True),
        ("<=", 3.0, False),
        ("<", 1.0, True),
        ("<", 2.0, False),
        (">=", 3.0, True),
        (">=", 2.0, True),
        (">=", 1.0, False),
        (">", 3.0, True),
        (">", 2.0, False),
    ],
)
def test_target_met(op: str, value: float, met: bool) -> None:
    t = common.target("R1.5", "ratio", value, op, 2.0, "x")
    assert t == {
        "id": "R1.5",
        "metric": "ratio",
        "value": value,
        "op": op,
        "target": 2.0,
        "unit": "x",
        "met": met,
    }


@pytest.mark.parametrize("op", ["<=", "<", ">=", ">"])
def test_nan_never_meets(op: str) -> None:
    assert common.target("X", "m", math.nan, op, 1.0, "u")["met"] is False


@pytest.mark.parametrize("op", ["==", "le", "", "=<"])
def test_bad_op_raises(op: str) -> None:
    with pytest.raises(ValueError, match="op"):
        common.target("X", "m", 1.0, op, 1.0, "u")


def test_results_round_trip(tmp_path: Path) -> None:
    targets = [common.target("R1.7", "latency", 420.0, "<=", 500.0, "ms")]
    figures = {"latency_ms": 420.0, "tokens": 64}
    path = common.write_results("demo", figures, targets, command="python -m x", results_dir=tmp_path)
    assert path == tmp_path / "demo.json"
    data = json.loads(path.read_text())
    assert set(data) == {"name", "command", "machine", "figures", "targets"}
    assert data["name"] == "demo"
    assert data["command"] == "python -m x"
    assert data["figures"] == figures
    assert data["targets"] == targets
    assert data["machine"]["cpu_count"] >= 1
    assert "torch" in data["machine"]["versions"]


def test_results_default_command(tmp_path: Path) -> None:
    data = json.loads(common.write_results("demo", {}, [], results_dir=tmp_path).read_text())
    assert data["command"] and data["targets"] == []


def test_results_rejects_incomplete_target(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks"):
        common.write_results("demo", {}, [{"id": "X", "value": 1.0}], results_dir=tmp_path)


def test_timeit_counts_calls() -> None:
    calls = []
    stats = common.timeit(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5
    assert stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
    with pytest.raises(ValueError):
        common.timeit(lambda: None, repeats=0)
