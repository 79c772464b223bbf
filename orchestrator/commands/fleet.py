"""Fleet upkeep: ``doctor``, ``bootstrap``, ``wheelhouse`` and ``deploy``.

Each command works on ``--devices`` in parallel and reports per device; one device's
failure never stops the others, and the exit status is 1 when any device failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.commands.inventory import load_selection
from orchestrator.commands.options import (
    DEFAULT_UPKEEP_PARALLEL,
    AcceptNewHostkeysOption,
    DevicesOption,
    InventoryOption,
    MaxParallelOption,
)

EXIT_DEVICE_FAILED = 1
_STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def register(app: typer.Typer) -> None:
    """Add ``doctor``, ``bootstrap``, ``wheelhouse`` and ``deploy`` to ``app``."""
    app.command("doctor")(doctor)
    app.command("bootstrap")(bootstrap)
    app.command("wheelhouse")(wheelhouse)
    app.command("deploy")(deploy)


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _bundle_cache() -> Path:
    from tasks.cache import BUNDLES, cache_path

    return cache_path(BUNDLES)


def for_each_device(
    devices: Sequence[Any],
    work: Callable[[Any], Any],
    *,
    max_workers: int = DEFAULT_UPKEEP_PARALLEL,
) -> list[tuple[Any, Any, Exception | None]]:
    """Run ``work(device)`` for every device, at most ``max_workers`` at once:
    (device, result, error) each."""
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers}")

    def guarded(device: Any) -> tuple[Any, Any, Exception | None]:
        try:
            return device, work(device), None
        except Exception as exc:  # reported per device; the others go on
            return device, None, exc

    if not devices:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(devices)))) as pool:
        return list(pool.map(guarded, devices))


def _error_text(exc: Exception) -> str:
    from tasks.errors import TslmError

    if isinstance(exc, TslmError):
        return exc.message + (f"\n  hint: {exc.hint}" if exc.hint else "")
    return f"internal error: {type(exc).__name__}: {exc}"


def _summarise(
    results: list[tuple[Any, Any, Exception | None]], ok_text: Callable[[Any], str], console: Any
) -> None:
    from rich.markup import escape

    failed = 0
    for device, result, error in results:
        if error is None:
            console.print(f"[green]ok[/green]   {escape(device.name)}: {escape(ok_text(result))}")
        else:
            failed += 1
            console.print(
                f"[bold red]FAIL[/bold red] {escape(device.name)}: {escape(_error_text(error))}"
            )
    if failed:
        console.print(f"{failed} of {len(results)} devices failed")
        raise typer.Exit(EXIT_DEVICE_FAILED)


# --------------------------------------------------------------------------- doctor


def doctor(
    devices: DevicesOption,
    inventory: InventoryOption = None,
    accept_new_hostkeys: AcceptNewHostkeysOption = False,
) -> None:
    """Check that each device is ready for a run.

    Reachable, Python, packages, agent bundle, meter, disk and heat.
    """
    from rich.markup import escape
    from rich.table import Table

    from orchestrator.doctor import run_doctor

    _, selected = load_selection(inventory, devices)
    bundle_sha = None
    try:
        from orchestrator.bundle import build_bundle

        bundle_sha = build_bundle(_bundle_cache()).sha256
    except (ImportError, OSError):
        pass  # without a buildable bundle, any deployed bundle counts
    reports = run_doctor(
        selected, accept_new_hostkeys=accept_new_hostkeys, bundle_sha256=bundle_sha
    )
    table = Table(title="tslm-fleet doctor", title_justify="left")
    for column in ("device", "check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for report in reports:
        for i, check in enumerate(report.checks):
            style = _STATUS_STYLE.get(check.status, "")
            table.add_row(
                escape(report.device) if i == 0 else "",
                check.name,
                f"[{style}]{check.status}[/{style}]",
                escape(check.detail),
                escape(check.hint or ""),
            )
        table.add_section()
    console = _console()
    console.print(table)
    bad = [r.device for r in reports if not r.ok]
    if bad:
        console.print(
            f"[bold red]{len(bad)} of {len(reports)} devices not ready[/bold red]: "
            f"{escape(', '.join(bad))}"
        )
        raise typer.Exit(EXIT_DEVICE_FAILED)
    console.print(f"[green]all {len(reports)} devices ready[/green]")


# --------------------------------------------------------------------------- bootstrap


def bootstrap(
    devices: DevicesOption,
    inventory: InventoryOption = None,
    accept_new_hostkeys: AcceptNewHostkeysOption = False,
    max_parallel: MaxParallelOption = None,
    wheelhouse_dir: Annotated[
        Path | None,
        typer.Option(
            "--wheelhouse",
            help="Push this folder of wheels and install everything from it, torch included "
            "(no package index needed on the devices).",
        ),
    ] = None,
    index_url: Annotated[
        str | None,
        typer.Option(
            "--index-url",
            help="Index for every package but torch (torch always comes from each device's "
            "`torch_index`, by default PyTorch's CPU-only index).",
        ),
    ] = None,
    base_python: Annotated[
        str | None,
        typer.Option(
            "--base-python",
            help="System Python on the devices that creates the venv (default: each device's "
            "`base_python`, else python3).",
        ),
    ] = None,
) -> None:
    """Install the agent's packages on each device.

    Creates the venv named by each device's `python` from its system Python (`base_python`)
    and installs the agent's packages into it, torch from the device's torch index.
    """
    from orchestrator.bootstrap import bootstrap_device
    from orchestrator.transport import open_transport
    from tasks.errors import ConfigError

    if wheelhouse_dir is not None and not wheelhouse_dir.is_dir():
        raise ConfigError(
            f"--wheelhouse {wheelhouse_dir}: not a directory",
            hint="build one with `tslm-fleet wheelhouse --platform aarch64 -o DIR`",
        )
    _, selected = load_selection(inventory, devices)
    console = _console()

    def work(device: Any) -> Any:
        console.print(f"{device.name}: bootstrapping (this can take a while)")
        with open_transport(device, accept_new_hostkeys=accept_new_hostkeys) as transport:
            return bootstrap_device(
                transport, wheelhouse=wheelhouse_dir, index_url=index_url, base_python=base_python
            )

    _summarise(
        for_each_device(selected, work, max_workers=max_parallel or DEFAULT_UPKEEP_PARALLEL),
        lambda r: (
            f"{'created' if r.created else 'reused'} {r.venv} (Python {r.python_version}, "
            f"{r.machine}), torch {r.torch} from {r.torch_source}, "
            f"{len(r.requirements)} requirements ({r.duration_s:.0f} s)"
        ),
        console,
    )


# --------------------------------------------------------------------------- wheelhouse


def wheelhouse(
    platform: Annotated[
        str,
        typer.Option(
            "--platform", help="Device CPU: aarch64 (Raspberry Pi 4/5, 64-bit OS) or x86_64."
        ),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder for the wheels.")] = Path(
        "wheels"
    ),
    python_version: Annotated[
        str, typer.Option("--python-version", help="The devices' Python version.")
    ] = "3.11",
    torch_index: Annotated[
        str | None,
        typer.Option(
            "--torch-index",
            help="Index that torch comes from (default: PyTorch's CPU-only index).",
        ),
    ] = None,
    torch_version: Annotated[
        str | None,
        typer.Option(
            "--torch-version", help="Torch version (default: the pin of the device packages)."
        ),
    ] = None,
    index_url: Annotated[
        str | None,
        typer.Option("--index-url", help="Index for every package but torch."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the pip commands only.")
    ] = False,
) -> None:
    """Download the devices' wheels for an offline bootstrap.

    Runs pip download for the devices' platform; then `bootstrap --wheelhouse DIR`. Torch comes from the torch index in a pip call of its own (no nvidia-* packages).
    """
    import shlex

    from orchestrator.wheelhouse import build_wheelhouse, plan_wheelhouse

    plan = plan_wheelhouse(
        platform,
        out,
        python_version=python_version,
        torch_index=torch_index,
        torch_version=torch_version,
        index_url=index_url,
    )
    if dry_run:
        others_source = index_url or "pip's configured index"
        typer.echo(f"# 1. {plan.torch} and its dependencies from {plan.torch_index}")
        typer.echo(shlex.join(plan.torch_call().argv))
        typer.echo(f"# 2. the other packages from {others_source}; torch is the wheel of step 1")
        typer.echo(shlex.join(plan.others_call(out / f"{plan.torch_wheel_pattern}").argv))
        return
    report = build_wheelhouse(plan)
    typer.echo(
        f"wheelhouse ready: {report.folder} ({len(report.wheels)} wheels, torch: "
        f"{report.torch_wheel}, no CUDA packages)"
    )


# --------------------------------------------------------------------------- deploy


def deploy(
    devices: DevicesOption,
    inventory: InventoryOption = None,
    accept_new_hostkeys: AcceptNewHostkeysOption = False,
    max_parallel: MaxParallelOption = None,
    artifact: Annotated[
        list[Path] | None,
        typer.Option("--artifact", help="Artifact folder to push as well (repeatable)."),
    ] = None,
) -> None:
    """Push the agent bundle and artifacts to each device.

    Files the device already has (same sha256) are skipped.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from orchestrator.bundle import build_bundle
    from orchestrator.deploy import (
        PushItem,
        RemoteLayout,
        deploy_files,
        items_for_directory,
    )
    from orchestrator.transport import open_transport
    from tasks.errors import ConfigError

    _, selected = load_selection(inventory, devices)
    bundle = build_bundle(_bundle_cache())
    items = [PushItem(bundle.path, RemoteLayout.bundle_path(bundle.sha256), bundle.sha256)]
    for folder in artifact or []:
        if not folder.is_dir():
            raise ConfigError(f"--artifact {folder}: not a directory")
        items += items_for_directory(folder, RemoteLayout.artifact_dir(folder.name))
    total = sum(item.local.stat().st_size for item in items)
    console = _console()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        console=console,
        transient=True,
    ) as progress:

        def work(device: Any) -> Any:
            task = progress.add_task(device.name, total=total)
            done_before: dict[str, int] = {}

            def on_bytes(rel: str, done: int, _size: int) -> None:
                done_before[rel] = done
                progress.update(
                    task, completed=sum(done_before.values()), description=f"{device.name} {rel}"
                )

            with open_transport(device, accept_new_hostkeys=accept_new_hostkeys) as transport:
                report = deploy_files(transport, items, progress=on_bytes)
            progress.update(task, completed=total, description=device.name)
            return report

        results = for_each_device(
            selected, work, max_workers=max_parallel or DEFAULT_UPKEEP_PARALLEL
        )
    _summarise(
        results,
        lambda r: (
            f"{len(r.pushed)} pushed, {len(r.skipped)} already there "
            f"({r.bytes_sent / 1e6:.1f} MB in {r.duration_s:.1f} s)"
        ),
        console,
    )
