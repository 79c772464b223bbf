"""``tslm-fleet run``: the whole experiment on the selected devices, with a live dashboard."""

from __future__ import annotations

from pathlib import Path

import typer

EXIT_TRIAL_FAILED = 1
EXIT_INTERRUPTED = 130


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    devices: str = typer.Option(
        ..., "--devices", "-d", help="Comma-separated device names, tags or groups ('all')."
    ),
    inventory: Path | None = typer.Option(
        None,
        "--inventory",
        "-i",
        help="Inventory file [env TSLM_INVENTORY; default ./inventory.yaml].",
    ),
    experiment: Path | None = typer.Option(
        None,
        "--experiment",
        "-e",
        help="Experiment YAML (model, variants, tasks, measurement settings).",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model: 'default' (embedded SmolLM2), a .gguf file, a "
        "local directory or a Hugging Face id.",
    ),
    variant: list[str] | None = typer.Option(
        None,
        "--variant",
        "-v",
        help="Variant METHOD[:key=value...], repeatable "
        "(default: dense, tt:ratio=2 and tt:ratio=2:keep=auto:center=true:alloc=weighted).",
    ),
    task: list[str] | None = typer.Option(
        None,
        "--task",
        "-t",
        help="Task NAME[:key=value...], repeatable (default: generate and perplexity).",
    ),
    queries: int | None = typer.Option(
        None, "--queries", "-n", help="Queries per repetition of the generate task."
    ),
    repetitions: int | None = typer.Option(
        None, "--repetitions", "-r", help="Repetitions of every trial."
    ),
    db: str | None = typer.Option(
        None, "--db", help="Database URL [env TSLM_DB; default sqlite:///results.db]."
    ),
    no_dashboard: bool = typer.Option(
        False, "--no-dashboard", help="Plain log lines instead of the live dashboard."
    ),
    resume: str | None = typer.Option(
        None, "--resume", help="Resume an interrupted or partial run by its id."
    ),
    accept_new_hostkeys: bool = typer.Option(
        False,
        "--accept-new-hostkeys",
        help="Record host keys of devices contacted for "
        "the first time (changed keys are still refused).",
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Controller cache for artifacts and the agent bundle [env TSLM_CACHE].",
    ),
    demo: bool = typer.Option(
        False, "--demo", help="Demo-sized experiment (fewer queries and repetitions)."
    ),
) -> None:
    """Compress, deploy and measure: every variant x task on every selected device."""
    from rich.console import Console

    from db.store import open_store
    from orchestrator.dashboard import make_display
    from orchestrator.experiment import build_experiment
    from orchestrator.inventory import load_inventory
    from orchestrator.progress import RunProgress
    from orchestrator.runs import execute_run
    from orchestrator.selection import select_devices
    from orchestrator.transport import open_transport

    console = Console()
    inv = load_inventory(inventory)
    selected = select_devices(inv, devices)
    exp = build_experiment(
        file=experiment,
        model=model,
        variants=variant,
        tasks=task,
        queries=queries,
        repetitions=repetitions,
        demo=demo,
    )
    store = open_store(db)
    console.print(
        f"[bold]tslm-fleet run[/]: {len(selected)} device(s) "
        f"({', '.join(d.name for d in selected)}), model {exp.model}, "
        f"variants {', '.join(exp.variants)}, "
        f"tasks {', '.join(t.name for t in exp.tasks)}, "
        f"{exp.repetitions} repetition(s)",
        highlight=False,
    )

    def transport_for(device):
        return open_transport(device, accept_new_hostkeys=accept_new_hostkeys)

    summary = execute_run(
        devices=selected,
        experiment=exp,
        store=store,
        progress_factory=lambda run_id, names: RunProgress(run_id, names),
        display_factory=lambda progress: make_display(
            progress, live=False if no_dashboard else None, console=console
        ),
        open_transport=transport_for,
        resume=resume,
        cache_dir=cache_dir,
        inventory_name=str(inv.path),
        log=lambda msg: console.print(msg, highlight=False),
    )

    from orchestrator.commands.results import print_compare

    console.print()
    print_compare(store, run_id=summary.run_id)
    for outcome in summary.outcomes:
        if not outcome.ok and outcome.error:
            console.print(f"[red]{outcome.device} failed:[/] {outcome.error}", highlight=False)
    console.print(
        f"run {summary.run_id}: {summary.status}"
        + (
            f" (resume with: tslm-fleet run --devices {devices} --resume {summary.run_id})"
            if summary.status in ("interrupted", "partial", "failed")
            else ""
        ),
        highlight=False,
    )
    if summary.status == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)
    if summary.failed_trials or summary.status != "ok":
        raise typer.Exit(EXIT_TRIAL_FAILED)
