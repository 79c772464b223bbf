"""``tslm-fleet run``: the whole experiment on the selected devices, with a live dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.commands.options import (
    AcceptNewHostkeysOption,
    DbOption,
    DevicesOption,
    InventoryOption,
    MaxParallelOption,
)

ExperimentOption = Annotated[
    Path | None,
    typer.Option(
        "--experiment",
        "-e",
        help="Experiment YAML (model, variants, tasks, measurement settings).",
    ),
]

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model: 'default' (embedded SmolLM2), a .gguf file, a local directory or a "
        "Hugging Face id.",
    ),
]

VariantOption = Annotated[
    list[str] | None,
    typer.Option(
        "--variant",
        metavar="METHOD[:KEY=VALUE...]",
        help="Variant, repeatable (default: dense, tt:ratio=2 and "
        "tt:ratio=2:keep=auto:center=true:alloc=weighted).",
    ),
]

TaskOption = Annotated[
    list[str] | None,
    typer.Option(
        "--task",
        "-t",
        metavar="NAME[:KEY=VALUE...]",
        help="Task, repeatable (default: generate and perplexity).",
    ),
]

QueriesOption = Annotated[
    int | None,
    typer.Option("--queries", "-n", help="Queries per repetition of the generate task."),
]

RepetitionsOption = Annotated[
    int | None, typer.Option("--repetitions", "-r", help="Repetitions of every trial.")
]

StableWaitOption = Annotated[
    float | None,
    typer.Option(
        "--stable-wait",
        metavar="SECONDS",
        help="Longest wait for stable idle power and temperature before each trial "
        "(0: no wait; default: the experiment's stability.max_wait_s, else 60).",
    ),
]

NoDashboardOption = Annotated[
    bool,
    typer.Option("--no-dashboard", help="Plain log lines instead of the live dashboard."),
]

ResumeOption = Annotated[
    str | None,
    typer.Option("--resume", metavar="ID", help="Resume an interrupted or partial run by its id."),
]

CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Controller cache for artifacts and the agent bundle "
        "(default: $TSLM_CACHE, else ~/.cache/tslm-fleet).",
    ),
]

DemoOption = Annotated[
    bool,
    typer.Option("--demo", help="Demo-sized experiment (fewer queries and repetitions)."),
]

PlaceWaitOption = Annotated[
    float,
    typer.Option(
        "--place-wait",
        metavar="SECONDS",
        min=0,
        help="How long a device waits for its labgrid place while someone else holds it, "
        "before it is skipped (0: skip at once).",
    ),
]

EXIT_TRIAL_FAILED = 1
EXIT_INTERRUPTED = 130


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``."""
    app.command("run")(run)


def run(
    devices: DevicesOption,
    inventory: InventoryOption = None,
    experiment: ExperimentOption = None,
    model: ModelOption = None,
    variant: VariantOption = None,
    task: TaskOption = None,
    queries: QueriesOption = None,
    repetitions: RepetitionsOption = None,
    stable_wait: StableWaitOption = None,
    db: DbOption = None,
    no_dashboard: NoDashboardOption = False,
    resume: ResumeOption = None,
    accept_new_hostkeys: AcceptNewHostkeysOption = False,
    cache_dir: CacheDirOption = None,
    demo: DemoOption = False,
    max_parallel: MaxParallelOption = None,
    place_wait: PlaceWaitOption = 600.0,
) -> None:
    """Compress, deploy and measure on the selected devices.

    Every variant x task runs on every selected device in parallel; the comparison table
    is printed at the end.
    """
    from rich.console import Console

    from db.store import open_store
    from orchestrator.commands.inventory import load_selection
    from orchestrator.experiment import build_experiment

    console = Console()
    inv, selected = load_selection(inventory, devices)
    exp = build_experiment(
        file=experiment,
        model=model,
        variants=variant,
        tasks=task,
        queries=queries,
        repetitions=repetitions,
        stable_wait_s=stable_wait,
        demo=demo,
    )
    store = open_store(db)
    if resume:
        given = {
            "--experiment": experiment,
            "--model": model,
            "--variant": variant,
            "--task": task,
            "--queries": queries,
            "--repetitions": repetitions,
            "--stable-wait": stable_wait,
            "--demo": demo or None,
        }
        _check_resume_flags(store, resume, exp, [f for f, v in given.items() if v is not None])
    _announce(console, selected, exp)
    summary = _execute(
        console,
        store,
        selected,
        exp,
        inv,
        resume,
        cache_dir,
        no_dashboard,
        accept_new_hostkeys,
        place_wait,
        max_parallel,
    )
    _report(console, store, summary, devices)


def _check_resume_flags(store: Any, resume: str, exp: Any, flags: list[str]) -> None:
    """Refuse ``--resume`` with experiment flags that contradict the stored run."""
    from orchestrator.experiment import experiment_from_dict, resume_conflicts
    from tasks.errors import ConfigError

    stored = store.run_config(resume)
    if not flags or stored is None:  # an unknown run id is reported by the run itself
        return
    conflicts = resume_conflicts(experiment_from_dict(stored, f"run {resume}"), exp, flags)
    if conflicts:
        raise ConfigError(
            f"--resume {resume}: the flags contradict the stored run; " + "; ".join(conflicts),
            hint="a resumed run measures what it started with: drop those flags, or start "
            "a new run without --resume",
        )


def _announce(console: Any, selected: list[Any], exp: Any) -> None:
    """One line: what is about to run, where."""
    console.print(
        f"[bold]tslm-fleet run[/]: {len(selected)} device(s) "
        f"({', '.join(d.name for d in selected)}), model {exp.model}, "
        f"variants {', '.join(exp.variants)}, "
        f"tasks {', '.join(t.name for t in exp.tasks)}, "
        f"{exp.repetitions} repetition(s)",
        highlight=False,
    )


def _execute(
    console: Any,
    store: Any,
    selected: list[Any],
    exp: Any,
    inv: Any,
    resume: str | None,
    cache_dir: Path | None,
    no_dashboard: bool,
    accept_new_hostkeys: bool,
    place_wait_s: float,
    max_parallel: int | None = None,
) -> Any:
    """Run the experiment with the live dashboard (or plain lines); the run's summary."""
    from orchestrator.dashboard import make_display
    from orchestrator.progress import RunProgress
    from orchestrator.runs import execute_run
    from orchestrator.transport import open_transport

    def transport_for(device: Any) -> Any:
        return open_transport(device, accept_new_hostkeys=accept_new_hostkeys)

    return execute_run(
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
        max_parallel=max_parallel,
        place_wait_s=place_wait_s,
    )


def _report(console: Any, store: Any, summary: Any, devices: str) -> None:
    """The comparison table, each failed device's error, the run's status; exits non-zero
    when the run was interrupted or a trial failed."""
    from orchestrator.commands.results import print_compare

    console.print()
    print_compare(store, run_id=summary.run_id)
    if summary.behind:
        console.print(
            f"[yellow]fell behind the others at the start:[/] {', '.join(summary.behind)}",
            highlight=False,
        )
    for outcome in summary.outcomes:
        if not outcome.ok and outcome.error:
            console.print(f"[red]{outcome.device} failed:[/] {outcome.error}", highlight=False)
    resumable = summary.status in ("interrupted", "partial", "failed")
    console.print(
        f"run {summary.run_id}: {summary.status}"
        + (
            f" (resume with: tslm-fleet run --devices {devices} --resume {summary.run_id})"
            if resumable
            else ""
        ),
        highlight=False,
    )
    if summary.status == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)
    if summary.failed_trials or summary.status != "ok":
        raise typer.Exit(EXIT_TRIAL_FAILED)
