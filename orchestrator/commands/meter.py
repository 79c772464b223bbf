"""``tslm-fleet meter``: check a power meter, emulate one, list meter kinds."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from tasks.numbers import MISSING


def register(app: typer.Typer) -> None:
    """Add the ``meter`` command group to ``app``."""
    group = typer.Typer(help="Check power meters before a run.", no_args_is_help=True)
    group.command("read")(read)
    group.command("kinds")(kinds)
    group.command("emulate")(emulate)
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


def emulate(
    kind: Annotated[str, typer.Option("--kind", help="Meter kind to emulate (um25c, hwmon, ...).")],
    watts: Annotated[float | None, typer.Option("--watts", help="A constant power.")] = None,
    follow_pid: Annotated[
        int | None, typer.Option("--follow-pid", help="Follow the CPU use of this process tree.")
    ] = None,
    follow_user: Annotated[
        str | None, typer.Option("--follow-user", help="Follow the CPU use of this user.")
    ] = None,
    follow_cgroup: Annotated[
        str | None,
        typer.Option("--follow-cgroup", help="Follow the CPU use of this cgroup (a folder)."),
    ] = None,
    trace: Annotated[
        str | None,
        typer.Option("--trace", help="Append the true power here ('t watts', monotonic clock)."),
    ] = None,
    idle_w: Annotated[float, typer.Option("--idle-w", help="Power at no CPU use.")] = 2.0,
    busy_w: Annotated[float, typer.Option("--busy-w", help="Extra power per busy core.")] = 1.5,
    rate_hz: Annotated[float, typer.Option("--rate", help="CPU-use reads per second.")] = 50.0,
    lag: Annotated[float, typer.Option("--lag", help="Seconds the meter lags the power.")] = 0.0,
    root: Annotated[
        str | None, typer.Option("--root", help="Folder for sysfs trees or vcgencmd.")
    ] = None,
    link: Annotated[
        str | None, typer.Option("--link", help="Stable symlink to a UM pty (like /dev/rfcomm0).")
    ] = None,
    world_accessible: Annotated[
        bool, typer.Option("--world-accessible", help="Let other users open what is served.")
    ] = False,
    seconds: Annotated[
        float | None, typer.Option("--seconds", help="Stop after this long (default: Ctrl-C).")
    ] = None,
) -> None:
    """Serve an emulated power meter, to rehearse a run before the hardware arrives.

    Prints one JSON line: the kind, the address served (pty, sysfs root or vcgencmd) and
    the meter options that reach it; then serves until Ctrl-C (or --seconds).
    """
    import contextlib
    import os
    import signal

    from agent.meters.emulate.serve import start_emulation

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGTERM, interrupted)  # a clean stop: the
    # trace file is complete. A meter is hardware that a busy board cannot slow down:
    # where allowed, run ahead of the load the emulator follows, so that its readings are
    # not late by the load. Both are undone on the way out (the command may run in-process).
    previous_priority = os.getpriority(os.PRIO_PROCESS, 0)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    try:
        _serve(
            kind,
            seconds,
            start_emulation(
                kind,
                watts=watts,
                follow_pid=follow_pid,
                follow_user=follow_user,
                follow_cgroup=follow_cgroup,
                idle_w=idle_w,
                busy_w=busy_w,
                rate_hz=rate_hz,
                trace_path=trace,
                lag_s=lag,
                root=root,
                link=link,
                world_accessible=world_accessible,
            ),
        )
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, previous_priority)


def _serve(kind: str, seconds: float | None, emulation: Any) -> None:
    """Print what is served, then serve until Ctrl-C, SIGTERM or ``seconds``."""
    import time

    with emulation:
        typer.echo(
            json.dumps({"kind": kind, "address": emulation.address, "options": emulation.options})
        )
        try:
            if seconds is None:
                while True:
                    time.sleep(3600)
            else:
                time.sleep(max(seconds, 0.0))
        except KeyboardInterrupt:
            pass
