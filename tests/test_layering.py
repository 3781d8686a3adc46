"""The tree is the architecture: imports run only downward, and the pure layers stay free of I/O machinery.

Layers, bottom up: ``collector.ami`` (the Asterisk edge; its framer is pure), ``collector.tracking`` (pure),
``collector.refdata``, ``collector.live``, ``collector.tools``, ``api`` (HTTP), ``collector.service`` (the
process, the only part of ``collector`` that imports ``api``). Checked from the source (every import
statement, including those inside functions) and by importing the pure modules in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: package → the packages its modules may import (its own always allowed)
ALLOWED: dict[str, frozenset[str]] = {
    "collector.ami": frozenset(),
    "collector.tracking": frozenset({"collector.ami.framing"}),
    "collector.refdata": frozenset(),
    "collector.live": frozenset({"collector.tracking", "collector.refdata"}),
    "collector.tools": frozenset({"collector.ami", "collector.tracking", "collector.live", "collector.refdata"}),
    "api": frozenset({"collector.ami.framing", "collector.tracking", "collector.refdata", "collector.live"}),
    "collector.service": frozenset({"collector.ami", "collector.tracking", "collector.refdata", "collector.live",
                                    "collector.tools", "api"}),
}
#: modules that must import without asyncio, aiohttp or sqlite3 coming along
PURE = ["collector.ami.framing", "collector.tracking.calls", "collector.tracking.tracker",
        "collector.refdata.model", "collector.refdata.index", "collector.refdata.visibility", "collector.live.enrich",
        "collector.live.table", "collector.live.history"]
IO_MODULES = ("asyncio", "aiohttp", "sqlite3")


def _package_of(module: str) -> str | None:
    for pkg in sorted(ALLOWED, key=len, reverse=True):
        if module == pkg or module.startswith(pkg + "."):
            return pkg
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Absolute names of every module the file imports (``from x import y`` counts ``x.y`` too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    is_pkg = path.name == "__init__.py"
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_pkg else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def _allowed(pkg: str, target: str) -> bool:
    if _package_of(target) is None and not target.startswith("collector"):
        return True  # stdlib and third-party
    if target in ("collector", "collector.__version__"):
        return True
    if target == pkg or target.startswith(pkg + "."):
        return True
    return any(target == a or target.startswith(a + ".") for a in ALLOWED[pkg])


def _violations() -> list[str]:
    bad = []
    for top in ("collector", "api"):
        for path in sorted((ROOT / top).rglob("*.py")):
            pkg = _package_of(_module_name(path))
            if pkg is None:  # collector/__init__.py, __main__.py: the entry point
                continue
            for line, target in _imports(path):
                if target.startswith(("collector", "api")) and not _allowed(pkg, target):
                    bad.append(f"{path.relative_to(ROOT)}:{line} ({pkg}) imports {target}")
    return bad


def test_every_module_belongs_to_a_layer() -> None:
    loose = [p.relative_to(ROOT).as_posix() for top in ("collector", "api") for p in (ROOT / top).rglob("*.py")
             if _package_of(_module_name(p)) is None]
    assert sorted(loose) == ["collector/__init__.py", "collector/__main__.py"]


def test_imports_only_run_downward() -> None:
    assert _violations() == []


def test_only_the_service_imports_api() -> None:
    offenders = [f"{p.relative_to(ROOT)}:{line}" for p in (ROOT / "collector").rglob("*.py")
                 if _package_of(_module_name(p)) != "collector.service"
                 for line, target in _imports(p) if target == "api" or target.startswith("api.")]
    assert offenders == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rule can fail: an upward import written into a pure module is reported."""
    src = ROOT / "collector" / "tracking" / "calls.py"
    tree_imports = _imports(src)
    assert all(_allowed("collector.tracking", t) for _, t in tree_imports)
    assert not _allowed("collector.tracking", "collector.live.table")
    assert not _allowed("collector.ami", "collector.tracking.tracker")
    assert not _allowed("api", "collector.service.config")
    assert _allowed("collector.service", "api.app")


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_without_io(module: str) -> None:
    code = (f"import sys, json; import {module}; "
            f"print(json.dumps([m for m in {list(IO_MODULES)!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    assert json.loads(out.stdout) == []
