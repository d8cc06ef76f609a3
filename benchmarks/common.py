"""Helpers shared by every benchmark script.

A benchmark is a script `benchmarks/<name>.py`, run from the repository root as
`python -m benchmarks.<name>`, that writes `benchmarks/results/<name>.json` through `write_results`:

    {"name": ..., "command": ..., "machine": machine_facts(), "figures": {...}, "targets": [target(...), ...]}

Targets are checked by reading these files, never by timed unit tests (DESIGN.md, "Interfaces").
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import operator
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}

_VERSIONED = ("torch", "numpy", "pyarrow", "tokenizers", "transformers")


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 2)  # kB -> GiB
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _command_line() -> str:
    """This process's command line, as `python -m pkg.mod args` when started with `-m`."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    args = ["-m", spec.name, *sys.argv[1:]] if spec is not None and spec.name else sys.argv
    return shlex.join([Path(sys.executable).name, *args])


def machine_facts() -> dict[str, Any]:
    """Facts about the machine and software a figure was measured on."""
    try:
        import torch

        torch_threads: int | None = torch.get_num_threads()
    except ImportError:
        torch_threads = None
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in _VERSIONED},
        "torch_threads": torch_threads,
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
    }


def target(id: str, metric: str, value: float, op: str, target: float, unit: str) -> dict[str, Any]:
    """One entry of a results file's `"targets"` list; `met` is `value <op> target`.

    A NaN value never meets a target.
    """
    if op not in OPS:
        raise ValueError(f"target {id!r}: op {op!r} is not one of {sorted(OPS)}")
    return {
        "id": id,
        "metric": metric,
        "value": value,
        "op": op,
        "target": target,
        "unit": unit,
        "met": bool(OPS[op](value, target)),
    }


def write_results(
    name: str,
    figures: dict[str, Any],
    targets: list[dict[str, Any]],
    command: str | None = None,
    results_dir: Path | None = None,
) -> Path:
    """Write `<results_dir>/<name>.json` (default `benchmarks/results/`) and return its path.

    `command` defaults to the command line this process was started with.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"results name {name!r} must be a plain file stem such as 'judge'")
    for t in targets:
        missing = {"id", "metric", "value", "op", "target", "unit", "met"} - t.keys()
        if missing:
            raise ValueError(f"target {t.get('id')!r} lacks {sorted(missing)}: build it with target()")
    if command is None:
        command = _command_line()
    results = {
        "name": name,
        "command": command,
        "machine": machine_facts(),
        "figures": figures,
        "targets": targets,
    }
    out_dir = RESULTS_DIR if results_dir is None else Path(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


def timeit(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict[str, float | int]:
    """Wall-clock `fn()` `repeats` times after `warmup` untimed calls; times in milliseconds."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    times_ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times_ms.append((time.perf_counter() - start) * 1e3)
    return {
        "median_ms": statistics.median(times_ms),
        "min_ms": min(times_ms),
        "max_ms": max(times_ms),
        "repeats": repeats,
        "warmup": warmup,
    }
