"""``tslm-fleet meter``: check a power meter attached to this machine, list meter kinds."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tasks.numbers import MISSING


def register(app: typer.Typer) -> None:
    """Add the ``meter`` command group to ``app``."""
    group = typer.Typer(help="Check power meters before a run.", no_args_is_help=True)
    group.command("read")(read)
    group.command("kinds")(kinds)
    app.add_typer(group, name="meter")


def read(
    kind: Annotated[str, typer.Option("--kind", help="Meter kind as in inventory.yaml.")],
    port: Annotated[str | None, typer.Option("--port", help="Serial port of a UM meter.")] = None,
    hwmon_name: Annotated[
        str | None, typer.Option("--hwmon-name", help="The hwmon device name.")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", metavar="KEY=VALUE", help="Any other driver option (repeatable)."),
    ] = None,
    seconds: Annotated[float, typer.Option("--seconds", help="How long to read.")] = 5.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON lines: one per sample, then a summary object.")
    ] = False,
) -> None:
    """Read a meter for a few seconds.

    Prints the live samples, then the mean power and the sample rate.
    """
    from agent.meter_cli import meter_options, sample_json, stream_samples
    from agent.meters.base import Sample

    options = meter_options(port, hwmon_name, option or [])
    if as_json:

        def on_sample(sample: Sample, t_origin: float) -> None:
            typer.echo(json.dumps(sample_json(sample, t_origin)))

        def on_warning(message: str) -> None:
            typer.echo(f"warning: {message}", err=True)

        summary = stream_samples(kind, options, seconds, on_sample, on_warning)
        typer.echo(json.dumps(summary.to_json()))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)

    def show(sample: Sample, t_origin: float) -> None:
        def cell(x: float | None, unit: str) -> str:
            return f"{MISSING:>9} {unit}" if x is None else f"{x:9.4f} {unit}"

        style = "" if sample.fresh else "dim"
        tag = "fresh" if sample.fresh else "repeat"
        console.print(
            f"{sample.t - t_origin:8.3f} s {cell(sample.volts, 'V')} "
            f"{cell(sample.amps, 'A')} {cell(sample.watts, 'W')}  {tag}",
            style=style,
        )

    def warn(message: str) -> None:
        err.print(f"[yellow]warning:[/] {message}")

    summary = stream_samples(kind, options, seconds, show, warn)
    console.print(f"[bold]{summary.description}[/]")
    table = Table(show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("mean power", MISSING if summary.mean_w is None else f"{summary.mean_w:.4f} W")
    table.add_row("samples", f"{summary.samples} in {summary.seconds:.2f} s")
    table.add_row("achieved rate", f"{summary.rate_hz:.1f} /s")
    table.add_row("fresh", f"{summary.fresh} ({summary.fresh_rate_hz:.1f} /s)")
    table.add_row("repeated", str(summary.samples - summary.fresh))
    table.add_row("gaps", str(summary.gaps))
    console.print(table)


def kinds() -> None:
    """List the meter kinds that inventory.yaml may name."""
    from rich.console import Console
    from rich.table import Table

    from agent.meters import METERS

    table = Table("kind", "driver")
    for kind, target in METERS.items():
        table.add_row(kind, target)
    Console().print(table)
