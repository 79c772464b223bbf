"""The import directions of ARCHITECTURE.md: no cycles, and what loads at run time.

The layers themselves (orchestrator > {agent, db} > tasks, what each package may not
import) are import-linter contracts in pyproject.toml, checked by `make lint`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the packages whose modules must import one way (no cycles)
PACKAGES = ("orchestrator", "agent", "db", "tasks", "testbed", "bench")


def import_graph(packages: Sequence[str]) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports, counting every import statement:
    also those inside functions and under ``TYPE_CHECKING`` (grimp reads them all)."""
    graph = grimp.build_graph(*packages, cache_dir=None)
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.get(module, ())):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(cycles)


def test_no_import_cycles() -> None:
    """The layer and package rules are import-linter contracts (pyproject.toml, `make
    lint`); this finds cycles between single modules, function-level imports included."""
    assert import_cycles(import_graph(PACKAGES)) == []


def test_cycle_finder_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "loopy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from loopy import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from loopy import c\n"
    )
    (pkg / "c.py").write_text("import loopy.a\n")
    (pkg / "d.py").write_text("import loopy.a\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert import_cycles(import_graph(["loopy"])) == [["loopy.a", "loopy.b", "loopy.c"]]
    finally:
        sys.path.remove(str(tmp_path))


def _modules_after_import(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_db_does_not_load_torch() -> None:
    mods = {p.stem for p in (ROOT / "db").glob("*.py") if p.stem != "__init__"}
    code = "\n".join(f"import db.{m}" for m in sorted(mods)) or "import db"
    loaded = _modules_after_import(code)
    assert "torch" not in loaded


def test_agent_does_not_load_controller_libraries() -> None:
    mods = sorted(
        p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        for p in (ROOT / "agent").rglob("*.py")
        if p.stem != "__main__"
    )
    loaded = _modules_after_import("\n".join(f"import {m}" for m in mods))
    assert not loaded & {
        "fabric",
        "rich",
        "sqlalchemy",
        "tensorly",
        "orchestrator",
        "db",
        "typer",
        "paramiko",
    }


def test_cli_help_starts_without_torch() -> None:
    loaded = _modules_after_import("from orchestrator.cli import build_app\nbuild_app()")
    assert "torch" not in loaded


def test_labgrid_pytest_plugin_stays_out_of_this_session(request: pytest.FixtureRequest) -> None:
    """labgrid (extra `labgrid`) registers a pytest plugin; pyproject's addopts blocks it."""
    assert request.config.pluginmanager.get_plugin("labgrid") is None
    assert "labgrid.pytestplugin" not in sys.modules
