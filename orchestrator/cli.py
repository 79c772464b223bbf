"""The ``tslm-fleet`` command line.

Each command (or command group) lives in its own module under
``orchestrator.commands`` and exposes ``register(app)``; :data:`COMMANDS` is the explicit
table of them. Command modules import heavy libraries (torch, transformers, fabric)
inside the command functions so that ``tslm-fleet --help`` starts fast.

Errors: every :class:`~tasks.errors.TslmError` that reaches this layer is printed as
``error: ...`` (plus ``hint: ...``) with exit status 2; a traceback reaching a user is
a bug.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer

from tasks import __version__
from tasks.errors import TslmError

#: module path of every command module, in the order ``--help`` lists them
COMMANDS: tuple[str, ...] = (
    "orchestrator.commands.run",
    "orchestrator.commands.compress",
    "orchestrator.commands.tasks",
    "orchestrator.commands.meter",
    "orchestrator.commands.inventory",
    "orchestrator.commands.fleet",
    "orchestrator.commands.lab",
    "orchestrator.commands.results",
    "orchestrator.commands.db",
    "orchestrator.commands.plot",
)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tslm-fleet {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="tslm-fleet",
        help="Compress the token embeddings of small language models with per-token tensor "
        "trains and measure quality, latency and energy per query across a fleet of boards.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        rich_markup_mode=None,
    )

    @app.callback()
    def _root(
        version: Annotated[
            bool,
            typer.Option(
                "--version",
                callback=_version_callback,
                is_eager=True,
                help="Print the version and exit.",
            ),
        ] = False,
    ) -> None:
        """tslm-fleet: TensorSLM experiments across a fleet of edge boards."""

    for module_name in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # command group not part of this build
            raise
        module.register(app)
    return app


def print_error(exc: TslmError) -> None:
    """Print a user-facing error (and its hint) to stderr."""
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(Text.assemble(("error: ", "bold red"), exc.message))
    if exc.hint:
        console.print(Text.assemble(("hint: ", "yellow"), exc.hint))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tslm-fleet`` console script."""
    app = build_app()
    try:
        app(args=argv, prog_name="tslm-fleet")
    except TslmError as exc:
        print_error(exc)
        if os.environ.get("TSLM_DEBUG"):
            raise
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
