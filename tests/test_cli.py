"""The top-level CLI: help, version, every registered command group imports."""

from __future__ import annotations

import importlib
import subprocess
import sys

from orchestrator.cli import COMMANDS


def test_every_command_module_registers() -> None:
    for name in COMMANDS:
        module = importlib.import_module(name)
        assert callable(module.register), name


def test_help_lists_the_command_groups() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for group in ("run", "compress", "meter", "inventory", "results", "compare", "db"):
        assert group in out


def test_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("tslm-fleet ")
