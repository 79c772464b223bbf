"""``tslm-fleet plot``: PNG figures of one run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.commands.options import DbOption


def register(app: typer.Typer) -> None:
    """Add the ``plot`` command to ``app``."""
    app.command("plot")(plot)


def load_results(db_url: str | None, run_id: str | None) -> tuple[str, list[Any]]:
    """The id of the run (``run_id``, else the latest) and its aggregated results rows."""
    from db.results import ResultFilter, results
    from db.runs import latest_run_id
    from db.store import open_store
    from db.urls import display_url
    from tasks.errors import ConfigError

    with open_store(db_url, read_only=True) as store:
        if run_id is None:
            run_id = latest_run_id(store.engine)
            if run_id is None:
                raise ConfigError(
                    f"no runs in {display_url(store.url)}",
                    hint="run an experiment first (tslm-fleet run)",
                )
        return run_id, results(store.engine, ResultFilter(run_id=run_id))


def plot(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", metavar="DIR", help="Directory for the PNG files (created if missing)."
        ),
    ],
    run: Annotated[
        str | None,
        typer.Option("--run", metavar="ID", help="Run to plot (default: the latest run)."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Write PNG figures of a run.

    Energy per query, perplexity and accuracy against compression ratio, latency per
    device and variant.
    """
    from orchestrator.plot_quality import write_accuracy_plot
    from orchestrator.plots import write_plots

    run_id, rows = load_results(db, run)
    for path in write_plots(rows, out, run_id=run_id):
        typer.echo(str(path))
    typer.echo(str(write_accuracy_plot(rows, out)))
