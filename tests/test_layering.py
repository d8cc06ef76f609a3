"""Import direction (STYLE.md habit 8 and the layout sketch): training code imports the package, never the
other way round; nothing in the package imports ``benchmarks``; the pure layers (schedules, network,
samplers, guidance, weights) never reach up into the engine, the CLI or the loaders.

Imports are read with ``ast``: a module-level import runs when the module is imported; one inside a
function body (such as ``arrowdiff.cli``'s ``train`` subcommand) only runs when it is called.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import arrowdiff

SRC = Path(arrowdiff.__file__).parent  # src/arrowdiff
PURE_LAYERS = ("schedules", "network", "samplers", "guidance", "weights")
UPPER_MODULES = ("arrowdiff.engine", "arrowdiff.cli", "arrowdiff.diffusion_core", "arrowdiff.loading",
                 "arrowdiff.ar_core", "arrowdiff.info", "arrowdiff.training")  # fmt: skip


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement in ``source``."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this module's package
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                found.append((target, top))
                found.extend((f"{target}.{alias.name}", top) for alias in child.names)
            # function bodies run later; class bodies run at import time
            visit(child, top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(source), True)
    return found


def package_modules() -> list[tuple[str, list[tuple[str, bool]]]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        name = module_name(path)
        out.append((name, imports(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")))
    return out


def within(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def test_the_import_reader() -> None:
    src = textwrap.dedent(
        """
        import os
        from arrowdiff.training import train
        from . import sibling
        from ..errors import ConfigError
        try:
            import benchmarks.common
        except ImportError:
            pass
        class C:
            from arrowdiff.weights import quantize
            def method(self):
                import arrowdiff.training.export
        def f():
            from arrowdiff.training.train import main
        """
    )
    found = imports(src, "arrowdiff.network.model")
    assert ("os", True) in found
    assert ("arrowdiff.training", True) in found and ("arrowdiff.training.train", True) in found
    assert ("arrowdiff.network.sibling", True) in found
    assert ("arrowdiff.errors.ConfigError", True) in found
    assert ("benchmarks.common", True) in found
    assert ("arrowdiff.weights", True) in found
    assert ("arrowdiff.training.export", False) in found
    assert ("arrowdiff.training.train", False) in found
    assert module_name(SRC / "network" / "__init__.py") == "arrowdiff.network"
    assert module_name(SRC / "samplers" / "masked.py") == "arrowdiff.samplers.masked"


def test_package_is_scanned() -> None:
    names = {name for name, _ in package_modules()}
    assert {
        "arrowdiff.engine",
        "arrowdiff.cli",
        "arrowdiff.training.train",
        "arrowdiff.samplers.masked",
    } <= names
    # the CLI's train subcommand imports training lazily: seen, but not at module level
    cli = dict(package_modules())["arrowdiff.cli"]
    assert ("arrowdiff.training.train", False) in cli


def test_inference_code_never_imports_training_at_module_level() -> None:
    bad = [
        f"{name} imports {target}"
        for name, found in package_modules()
        if not within(name, "arrowdiff.training")
        for target, top in found
        if top and within(target, "arrowdiff.training")
    ]
    assert not bad, bad


def test_nothing_imports_benchmarks() -> None:
    bad = [
        f"{name} imports {t}"
        for name, found in package_modules()
        for t, _ in found
        if within(t, "benchmarks")
    ]
    assert not bad, bad


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layers_do_not_import_upwards(layer: str) -> None:
    bad = [
        f"{name} imports {target}"
        for name, found in package_modules()
        if within(name, f"arrowdiff.{layer}")
        for target, _ in found
        if any(within(target, up) for up in UPPER_MODULES)
    ]
    assert not bad, bad


def test_importing_the_engine_and_cli_loads_no_training_code() -> None:
    code = (
        "import sys, arrowdiff.engine, arrowdiff.cli, arrowdiff.info\n"
        "from arrowdiff import ArrowEngine\n"
        "leaked = sorted(m for m in sys.modules if m.startswith(('arrowdiff.training', 'benchmarks')))\n"
        "print(','.join(leaked))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
