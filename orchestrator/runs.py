"""One run of an experiment across the selected devices, from compression to summary.

1. compress every variant once on the controller (cached by content);
2. record the run, devices, artifacts and trials in the database;
3. run one :class:`~orchestrator.scheduler.DeviceWorker` per device in parallel;
4. on Ctrl-C ask every agent to stop, store what arrived, mark the run interrupted
   (resumable with ``--resume RUN_ID``).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.experiment import Experiment, experiment_from_dict
from orchestrator.lab.booking import DEFAULT_PLACE_WAIT_S, LabBookings, PlaceBooking
from orchestrator.placement import DATA_DIR, place_tasks, task_files
from orchestrator.plans import ModelPayload, PreparedVariant, TrialPlan
from orchestrator.progress import RunProgress
from orchestrator.scheduler import DeviceOutcome, DeviceWorker
from tasks import __version__
from tasks.cache import ARTIFACTS, BUNDLES, cache_path
from tasks.errors import ConfigError, TslmError

#: a device not measuring this long after the first device began is reported by name
BEHIND_AFTER_S = 60.0


class BehindReporter:
    """Logs, once each, the devices that fall behind: still connecting, deploying or
    starting :data:`BEHIND_AFTER_S` after another device began measuring."""

    def __init__(
        self, progress: RunProgress, log: Callable[[str], None], after_s: float = BEHIND_AFTER_S
    ) -> None:
        self.progress = progress
        self.log = log
        self.after_s = after_s
        self.reported: list[str] = []

    def check(self) -> None:
        for name, state, waited in self.progress.behind(self.after_s):
            if name not in self.reported:
                self.reported.append(name)
                self.log(
                    f"{name} is falling behind: still {state} {waited:.0f} s after the first "
                    "device began measuring"
                )


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    status: str  # ok, partial, failed, interrupted
    outcomes: tuple[DeviceOutcome, ...]
    #: devices that fell behind the others at the start (see :class:`BehindReporter`)
    behind: tuple[str, ...] = ()

    @property
    def failed_trials(self) -> list[tuple[str, str]]:
        return [
            (o.device, label)
            for o in self.outcomes
            for label, status in o.trials.items()
            if status == "failed"
        ]


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def prepare_model(model: str) -> tuple[Any, ModelPayload]:
    """Resolve the model and describe what to push to the devices."""
    from orchestrator.deploy import RemoteLayout
    from tasks.models import resolve_model

    ref = resolve_model(model)
    files = tuple(ref.files())
    remote_dir = RemoteLayout.model_dir(ref.sha256)
    if ref.path is not None and Path(ref.path).is_dir():
        root = Path(ref.path)
        remote_rel = remote_dir
    else:
        root = files[0].parent
        remote_rel = f"{remote_dir}/{files[0].name}"
    return ref, ModelPayload(
        name=ref.name,
        local_files=files,
        local_root=root,
        remote_rel=remote_rel,
        remote_dir=remote_dir,
        sha256=ref.sha256,
    )


def prepare_variants(
    model_ref: Any, specs: tuple[str, ...], store: Any, cache_dir: Path, log: Callable[[str], None]
) -> list[PreparedVariant]:
    """Compress every variant once (cached) and register its artifact."""
    from tasks.artifacts import build_artifact
    from tasks.compression import parse_variant

    prepared = []
    for text in specs:
        spec = parse_variant(text)
        if spec.method == "dense":
            manifest = {
                "method": "dense",
                "variant": spec.canonical,
                "model": model_ref.name,
                "model_sha256": model_ref.sha256,
                "compression_ratio": 1.0,
            }
            artifact_id = store.register_artifact(manifest, None)
            prepared.append(
                PreparedVariant(
                    spec=spec.canonical,
                    slug=spec.slug,
                    method="dense",
                    artifact_dir=None,
                    artifact_sha256=None,
                    artifact_id=artifact_id,
                )
            )
            continue
        log(f"compressing {model_ref.name} with {spec.canonical} ...")
        info = build_artifact(model_ref, spec, cache_path(ARTIFACTS, root=cache_dir))
        ratio = info.manifest.get("compression_ratio")
        log(
            f"  artifact {info.path.name}: ratio {ratio:.3g}x"
            if isinstance(ratio, float)
            else f"  artifact {info.path.name}"
        )
        artifact_id = store.register_artifact(info.manifest, info.sha256)
        prepared.append(
            PreparedVariant(
                spec=spec.canonical,
                slug=spec.slug,
                method=spec.method,
                artifact_dir=Path(info.path),
                artifact_sha256=info.sha256,
                artifact_id=artifact_id,
            )
        )
    return prepared


def execute_run(
    *,
    devices: list[Any],
    experiment: Experiment,
    store: Any,
    progress_factory: Callable[[str, list[str]], RunProgress],
    display_factory: Callable[[RunProgress], Any],
    open_transport: Callable[[Any], Any],
    resume: str | None = None,
    cache_dir: Path | None = None,
    inventory_name: str = "inventory.yaml",
    log: Callable[[str], None] = print,
    place_wait_s: float = DEFAULT_PLACE_WAIT_S,
    max_parallel: int | None = None,
    batch_trials: bool = True,
    behind_after_s: float = BEHIND_AFTER_S,
) -> RunSummary:
    """Run ``experiment`` on ``devices``; returns per-device outcomes, never partial-loses.

    Devices with a labgrid place hold it for their part of the run (see
    :mod:`orchestrator.lab.booking`); every coordinator is reached before anything else.
    ``max_parallel``: at most this many devices connect and deploy at once (None: all).
    ``batch_trials``: a device runs all its trials in one agent process that loads the
    base model once (False: one process and one model load per trial).
    ``behind_after_s``: a device not measuring so long after the first one began is
    logged by name and listed in the summary's ``behind``.
    """
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(
            f"--max-parallel {max_parallel}: at least one device must be able to deploy",
            hint="give a positive number, or leave it out for no limit",
        )
    lab = LabBookings(devices, log) if any(d.lab_place for d in devices) else None
    try:
        return _execute(
            devices, experiment, store, progress_factory, display_factory, open_transport,
            resume, cache_dir, inventory_name, log, lab, place_wait_s, max_parallel,
            batch_trials, behind_after_s,
        )  # fmt: skip
    finally:
        if lab is not None:
            lab.close()


def _execute(
    devices: list[Any],
    experiment: Experiment,
    store: Any,
    progress_factory: Callable[[str, list[str]], RunProgress],
    display_factory: Callable[[RunProgress], Any],
    open_transport: Callable[[Any], Any],
    resume: str | None,
    cache_dir: Path | None,
    inventory_name: str,
    log: Callable[[str], None],
    lab: LabBookings | None,
    place_wait_s: float,
    max_parallel: int | None,
    batch_trials: bool,
    behind_after_s: float,
) -> RunSummary:
    from orchestrator.bundle import build_bundle

    cache_dir = cache_path(root=cache_dir)
    run_id, experiment = _run_id_and_experiment(store, experiment, resume)
    model_ref, payload = prepare_model(experiment.model)
    variants = prepare_variants(model_ref, experiment.variants, store, cache_dir, log)
    bundle = build_bundle(cache_path(BUNDLES, root=cache_dir))
    store.create_run(
        run_id, experiment.to_dict(), inventory_name, model=model_ref.name, tool_version=__version__
    )
    placed = place_tasks(devices, experiment.tasks, cache_dir)
    devices = [device for device, _ in placed]
    plans = plan_trials(store, run_id, placed, variants, experiment, cache_dir)
    progress = progress_factory(run_id, [d.name for d in devices])
    for device in devices:
        progress.plan(
            device.name,
            trials_total=len(plans[device.name]),
            queries_total=sum(p.estimated_queries for p in plans[device.name]),
        )
    stop_event = threading.Event()
    store_lock = threading.Lock()
    deploy_slots = None if max_parallel is None else threading.BoundedSemaphore(max_parallel)
    bookings = _bookings(lab, devices, run_id, store, store_lock, place_wait_s, progress)
    with display_factory(progress) as display:
        if lab is not None:
            lab.log = display.log
        workers = [
            DeviceWorker(
                device=d,
                run_id=run_id,
                experiment=experiment,
                trials=plans[d.name],
                model=payload,
                bundle=bundle,
                store=store,
                store_lock=store_lock,
                progress=progress,
                # a device with a place stops on its own when the place is taken
                stop_event=threading.Event() if d.name in bookings else stop_event,
                open_transport=open_transport,
                log=display.log,
                deploy_slots=deploy_slots,
                batch_trials=batch_trials,
            )
            for d in devices
        ]
        reporter = BehindReporter(progress, display.log, after_s=behind_after_s)
        outcomes = _run_workers(workers, stop_event, display.log, bookings, tick=reporter.check)
    status = run_status(outcomes, interrupted=stop_event.is_set())
    with store_lock:
        store.finish_run(run_id, status)
    return RunSummary(
        run_id=run_id, status=status, outcomes=tuple(outcomes), behind=tuple(reporter.reported)
    )


def _bookings(
    lab: LabBookings | None,
    devices: list[Any],
    run_id: str,
    store: Any,
    store_lock: threading.Lock,
    wait_s: float,
    progress: RunProgress,
) -> dict[str, PlaceBooking]:
    """device name -> the booking of its labgrid place (devices without a place: none)."""
    if lab is None:
        return {}
    return {
        d.name: PlaceBooking(
            lab,
            d,
            run_id=run_id,
            store=store,
            store_lock=store_lock,
            wait_s=wait_s,
            set_state=lambda state, msg, name=d.name: progress.set_state(name, state, message=msg),
        )
        for d in devices
        if d.lab_place
    }


def _run_id_and_experiment(
    store: Any, experiment: Experiment, resume: str | None
) -> tuple[str, Experiment]:
    """A new run id and ``experiment``; on ``--resume`` the run's id and its stored experiment."""
    if not resume:
        return new_run_id(), experiment
    stored = store.run_config(resume)
    if stored is None:
        raise ConfigError(
            f"--resume {resume}: no such run in the database",
            hint="`tslm-fleet runs` lists the runs",
        )
    # a resumed run measures exactly what it started with
    return resume, experiment_from_dict(stored, f"run {resume}")


def plan_trials(
    store: Any,
    run_id: str,
    placed: list[tuple[Any, tuple[Any, ...]]],
    variants: list[PreparedVariant],
    experiment: Experiment,
    cache_dir: Path,
) -> dict[str, list[TrialPlan]]:
    """Record the devices and their trials (variant x task) in the database; the plan of
    each device by name. On a resume the stored trials are found again.

    ``placed``: each device with the tasks it runs (see :func:`place_tasks`); a task's job
    parameters name the data files pushed with it.
    """
    jobs = {id(t): task_files(t, cache_path(DATA_DIR, root=cache_dir)) for t in experiment.tasks}
    plans: dict[str, list[TrialPlan]] = {}
    for device, tasks in placed:
        store.upsert_device(
            name=device.name,
            host=device.host or "localhost",
            board=device.board,
            transport=device.transport,
            meter_kind=device.meter.kind,
        )
        plans[device.name] = [
            TrialPlan(
                trial_id=store.create_trial(
                    run_id, device.name, v.spec, t.name, v.artifact_id, dict(t.params)
                ),
                variant=v,
                task=t.name,
                params=jobs[id(t)][0],
                estimated_queries=_estimated_queries(t, experiment.repetitions),
                files=jobs[id(t)][1],
            )
            for v in variants
            for t in tasks
        ]
    return plans


def _run_workers(
    workers: list[DeviceWorker],
    stop_event: threading.Event,
    log: Callable[[str], None],
    bookings: dict[str, PlaceBooking] | None = None,
    tick: Callable[[], None] | None = None,
) -> list[DeviceOutcome]:
    """Run every worker in a thread of its own; Ctrl-C asks them all to stop and waits."""
    # each worker sets its own flag when it ends: CPython 3.11's Thread.join(), once
    # interrupted by Ctrl-C, leaves is_alive() False while the thread still runs, so a
    # join loop would stop waiting for the agents to finish their current query
    finished = [threading.Event() for _ in workers]
    for worker, flag in zip(workers, finished, strict=True):
        threading.Thread(
            target=_run_worker,
            args=(worker, flag, (bookings or {}).get(worker.device.name), stop_event),
            name=f"device-{worker.device.name}",
            daemon=True,
        ).start()
    try:
        _wait_all(finished, tick)
    except KeyboardInterrupt:
        log("interrupted: asking the agents to stop (Ctrl-C again to abandon)")
        stop_event.set()
        _wait_all(finished)
    return [w.outcome for w in workers]


def run_status(outcomes: list[DeviceOutcome], *, interrupted: bool) -> str:
    """The run's status: interrupted, ok, partial (something succeeded) or failed."""
    if interrupted:
        return "interrupted"
    if all(o.ok for o in outcomes):
        return "ok"
    if any(o.ok for o in outcomes) or any(s == "ok" for o in outcomes for s in o.trials.values()):
        return "partial"
    return "failed"


def _run_worker(
    worker: DeviceWorker,
    finished: threading.Event,
    booking: PlaceBooking | None,
    run_stop: threading.Event,
) -> None:
    try:
        if booking is None:
            worker.run()
            return
        _run_booked(worker, booking, run_stop)
    finally:
        finished.set()


def _run_booked(worker: DeviceWorker, booking: PlaceBooking, run_stop: threading.Event) -> None:
    """The device's part of the run inside its place: acquire (or wait, or skip), run
    while watching the place, release whatever happens."""
    try:
        try:
            skipped = booking.acquire(run_stop)
        except TslmError as exc:
            skipped = exc.message
        except Exception as exc:  # a bug must not take the other devices down
            skipped = f"internal error: {type(exc).__name__}: {exc}"
        if skipped is not None:
            worker.skip(skipped, interrupted=run_stop.is_set())
            return
        booking.watch(run_stop, worker.stop_event)
        worker.run()
        if booking.lost_to is not None:
            booking.release()  # stops the watcher before the trials are settled
            worker.reservation_lost(
                f"reservation lost: place {booking.place} was taken by {booking.lost_to} "
                "mid-run; the trial was stopped"
            )
    finally:
        booking.release()


def _wait_all(finished: list[threading.Event], tick: Callable[[], None] | None = None) -> None:
    for flag in finished:
        while not flag.wait(0.25):
            if tick is not None:
                tick()


def _estimated_queries(task: Any, repetitions: int) -> int:
    """Queries a trial will run, for the progress bars until the agent reports the count
    (perplexity windows depend on the text and the tokenizer)."""
    from tasks.workloads import get_task

    estimate = getattr(get_task(task.name), "estimate_queries", None)
    n = estimate(dict(task.params)) if callable(estimate) else task.params.get("num_queries")
    if not isinstance(n, int):
        n = 8 if task.name == "generate" else 4
    return n * repetitions
