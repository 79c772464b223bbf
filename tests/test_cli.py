"""The top-level CLI: help, version, every command's help rendered in full, one grammar."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator

import click
import pytest
import typer.main
from typer.testing import CliRunner

from orchestrator.cli import COMMANDS, build_app

#: commands that contact devices: their --devices must be the same option
DEVICE_COMMANDS = ("run", "doctor", "bootstrap", "deploy")
#: the widest a command's one-line summary may be to fit an 80-column command list
SUMMARY_WIDTH = 60


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


def _commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


APP = build_app()
ROOT = typer.main.get_command(APP)
ALL_COMMANDS = list(_commands(ROOT))
COMMAND_IDS = [" ".join(path) or "tslm-fleet" for path, _ in ALL_COMMANDS]


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(APP, [*path, "--help"], terminal_width=80, prog_name="tslm-fleet")
    assert result.exit_code == 0, result.output
    return result.output


def _squeezed(text: str) -> str:
    """Text without whitespace: help wraps lines (and may break after a hyphen) anywhere."""
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS, ids=COMMAND_IDS)
def test_help_shows_every_option_description_in_full(
    path: tuple[str, ...], command: click.Command
) -> None:
    shown = _squeezed(_help(path))
    assert _squeezed(command.help or "").removesuffix("\f") in shown or not command.help
    for param in command.params:
        text = getattr(param, "help", None)
        if text:
            assert _squeezed(text) in shown, f"{' '.join(path)} {param.name}: {text!r}"


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS, ids=COMMAND_IDS)
def test_one_grammar(path: tuple[str, ...], command: click.Command) -> None:
    where = " ".join(("tslm-fleet", *path))
    summary = (command.help or "").strip().split("\n\n")[0]
    assert summary[:1].isupper() and summary.endswith("."), f"{where}: {summary!r}"
    if path:  # listed by its group: one line, whole
        assert "\n" not in summary and len(summary) <= SUMMARY_WIDTH, f"{where}: {summary!r}"
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        assert "-v" not in param.opts, f"{where}: -v is for verbosity only"
        if "--out" in param.opts:
            assert "-o" in param.opts, f"{where}: --out without -o"
        text = param.help or ""
        assert text[:1].isupper() and text.endswith("."), f"{where} {param.opts}: {text!r}"


def test_the_command_list_shows_every_summary_whole() -> None:
    out = _help(()).split("Commands:")[1]
    assert "..." not in out  # a summary too long for the list is cut with "..."
    for name, command in ROOT.commands.items():
        summary = command.help.strip().split("\n\n")[0]
        assert re.search(rf"^\s+{name}\s+{re.escape(summary)}$", out, re.M), name


def test_devices_is_the_same_option_wherever_devices_are_contacted() -> None:
    def devices(command: click.Command) -> tuple:
        (param,) = [p for p in command.params if p.name == "devices"]
        return (tuple(param.opts), param.required, param.help, param.default)

    shapes = {devices(ROOT.commands[name]) for name in DEVICE_COMMANDS}
    assert len(shapes) == 1 and next(iter(shapes))[1] is True


def test_brackets_in_help_are_not_markup() -> None:
    out = _help(("run",))
    assert "[env var: TSLM_INVENTORY]" in out
    assert "METHOD[:KEY=VALUE...]" in out
