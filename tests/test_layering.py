"""The rooms' may-import rules (docs/DESIGN.md, "Layout"), checked on the source tree with ``ast``:
only the CLI imports ``aptrank.pipeline.commands`` (no command imports another, no library module a
command); ``apt`` and ``data`` import no other room; ``models`` imports ``data`` (and its export,
``serving.onnx_model``, ``serving.model_integrity`` and ``serving.errors``, to reload, check and
stamp the graph as the scorers do); ``serving`` imports neither torch
nor ``models`` nor ``pipeline``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".git", "results", "__pycache__", "work", "build"}
CLI = "pipeline/cli.py"
COMMANDS = "aptrank.pipeline.commands"

# room -> module prefixes it must not import (anywhere in the file, function-level imports included)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "apt": ("aptrank.data", "aptrank.models", "aptrank.pipeline", "aptrank.serving"),
    "data": ("aptrank.apt", "aptrank.models", "aptrank.pipeline", "aptrank.serving", "torch"),
    "models": ("aptrank.apt", "aptrank.pipeline", "aptrank.serving"),
    "serving": ("aptrank.apt", "aptrank.models", "aptrank.pipeline", "torch"),
}
# the one allowed crossing: the export reloads its graph exactly as the scorers do, and checks and
# stamps it (finite weights, SHA-256 sidecar) with the scorers' own integrity code
ALLOWED: dict[str, tuple[str, ...]] = {
    "models/export/": ("aptrank.serving.onnx_model", "aptrank.serving.model_integrity", "aptrank.serving.errors")
}


def python_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.py")):
        if not SKIP.intersection(path.relative_to(ROOT).parts):
            yield path


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in ``path``, plus string literals passed to
    ``importlib.import_module`` (f-strings: their constant prefix)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield node.lineno, arg.value
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                yield node.lineno, str(arg.values[0].value)


def matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_only_the_cli_imports_the_commands() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in python_files()
        if path.relative_to(ROOT).as_posix() != CLI
        and not path.relative_to(ROOT).as_posix().startswith("pipeline/commands/")
        for line, module in imported_modules(path)
        if matches(module, COMMANDS) or module.startswith(COMMANDS)
    ]
    assert offenders == [], "only pipeline/cli.py may import aptrank.pipeline.commands:\n" + "\n".join(offenders)


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports_follow_the_design(room: str) -> None:
    offenders = []
    for path in sorted((ROOT / room).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        allowed = [a for where, mods in ALLOWED.items() if rel.startswith(where) for a in mods]
        for line, module in imported_modules(path):
            if any(matches(module, p) for p in FORBIDDEN[room]) and not any(matches(module, a) for a in allowed):
                offenders.append(f"{rel}:{line} imports {module}")
    assert offenders == [], f"{room}/ may not import {FORBIDDEN[room]}:\n" + "\n".join(offenders)


def test_the_scan_sees_imports(tmp_path: Path) -> None:
    """The scanner finds plain, from-, function-level and importlib imports (else the rules above
    would pass vacuously)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib\nfrom aptrank.pipeline import commands\n"
        "def f():\n    from aptrank.pipeline.commands.export import x\n"
        "    importlib.import_module(f'aptrank.pipeline.commands.{1}')\n"
    )
    found = [m for _, m in imported_modules(probe) if m.startswith(COMMANDS)]
    assert sorted(found) == [
        "aptrank.pipeline.commands",
        "aptrank.pipeline.commands.",
        "aptrank.pipeline.commands.export",
        "aptrank.pipeline.commands.export.x",
    ]
