"""Running an experiment across a fleet: one worker thread per device.

Each device worker connects (strict host keys), deploys the agent bundle, the model and
the artifacts it needs (skipping what the device already has), then runs its trials as
one batch: it writes every pending trial's job spec, starts one detached agent process
for all of them (which loads the base model once and swaps each variant's embedding),
then follows the jobs' event streams in order and stores every event. A batch whose
process dies fails the trial it was running; the trials it never started go to a new
batch. A dropped connection is followed by a reconnect and a
``follow --from`` the last stored seq, so nothing is lost or stored twice. A device
that fails is marked failed with its error; the other devices go on.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.protocol import (
    Event,
    FileRef,
    JobSpec,
    MeterSpec,
    TaskSpec,
    WindowPolicy,
)
from orchestrator.deploy import PushItem, RemoteLayout, deploy_files, items_for_directory
from orchestrator.experiment import Experiment
from orchestrator.follow import FollowOutcome, TrialFollower, follow_stall_s
from orchestrator.link import DeviceLink
from orchestrator.plans import ModelPayload, TrialPlan
from orchestrator.progress import RunProgress
from tasks.errors import AgentError, TslmError
from tasks.hashing import sha256_file


@dataclass
class DeviceOutcome:
    """What happened on one device: ok, the first error, each trial's status."""

    device: str
    ok: bool = True
    error: str | None = None
    trials: dict[str, str] = field(default_factory=dict)  # label -> status


def _attempt_of(job_id: str | None) -> int:
    """Attempt number encoded in a job id (``...-a3`` -> 3; 0 for no job yet)."""
    if not job_id:
        return 0
    tail = job_id.rsplit("-a", 1)[-1]
    return int(tail) if tail.isdigit() else 1


def safe_id(text: str) -> str:
    """Make a string safe for job ids and remote file names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-") or "x"


class _TrialEvents:
    """The event sink of one trial: the database (in order, under the store lock) and
    the dashboard."""

    def __init__(
        self,
        store: Any,
        store_lock: threading.Lock,
        trial_id: int,
        progress: RunProgress,
        device: str,
    ) -> None:
        self._store = store
        self._store_lock = store_lock
        self._trial_id = trial_id
        self._progress = progress
        self._device = device

    def store(self, events: Sequence[Event]) -> None:
        with self._store_lock:
            self._store.ingest_events(self._trial_id, [e.to_dict() for e in events])

    def show(self, event: Event) -> None:
        self._progress.apply_event(self._device, event)


class DeviceWorker:
    """Runs all trials of one device; never raises (the outcome says what happened)."""

    def __init__(
        self,
        *,
        device: Any,
        run_id: str,
        experiment: Experiment,
        trials: list[TrialPlan],
        model: ModelPayload,
        bundle: Any,
        store: Any,
        store_lock: threading.Lock,
        progress: RunProgress,
        stop_event: threading.Event,
        open_transport: Callable[[Any], Any],
        log: Callable[[str], None],
        deploy_slots: threading.BoundedSemaphore | None = None,
        batch_trials: bool = True,
    ) -> None:
        self.device = device
        self.run_id = run_id
        self.experiment = experiment
        self.trials = trials
        self.model = model
        self.bundle = bundle
        self.store = store
        self.store_lock = store_lock
        self.progress = progress
        self.stop_event = stop_event
        self.log = log
        #: shared by the workers of a run: at most so many connect and deploy at once
        self.deploy_slots = deploy_slots
        #: all trials in one agent process (False: a process per trial, loading the model
        #: each time, the baseline the load-once benchmark measures against)
        self.batch_trials = batch_trials
        self.outcome = DeviceOutcome(device=device.name)
        self.stall_s = follow_stall_s()
        self.link = DeviceLink(
            device,
            open_transport,
            bundle_rel=RemoteLayout.bundle_path(bundle.sha256),
            stop_event=stop_event,
            on_reconnecting=lambda why: progress.set_state(
                device.name, "reconnecting", message=why
            ),
            log=log,
        )

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> DeviceOutcome:
        """Connect, deploy and run every trial; returns the outcome (never raises)."""
        name = self.device.name
        try:
            self._connect_and_deploy()
            self._run_trials()
            final = "interrupted" if self.stop_event.is_set() else "done"
            if not self.outcome.ok:
                final = "failed"
            self.progress.set_state(name, final, message=self.outcome.error)
        except TslmError as exc:
            self._fail_remaining(exc.message)
        except Exception as exc:  # a bug must not take the other devices down
            self._fail_remaining(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.link.close()
        return self.outcome

    def _connect_and_deploy(self) -> None:
        """Connect and push what the device lacks, in one of the run's deploy slots."""
        name = self.device.name
        if self.deploy_slots is not None:
            while not self.deploy_slots.acquire(timeout=0.25):
                if self.stop_event.is_set():
                    raise TslmError(f"{name}: run interrupted before this device deployed")
        try:
            self.progress.set_state(name, "connecting")
            self.link.connect()
            self.progress.set_state(name, "deploying")
            self._deploy()
            self.progress.set_state(name, "starting")  # before the slot goes to another
        finally:
            if self.deploy_slots is not None:
                self.deploy_slots.release()

    def skip(self, reason: str, *, interrupted: bool = False) -> DeviceOutcome:
        """Run nothing on this device (its place is held by someone else, or the run was
        interrupted while it waited): every trial not finished before is stopped (or
        interrupted), with ``reason``."""
        self.outcome.ok = interrupted
        self.outcome.error = reason if interrupted else f"skipped: {reason}"
        self._settle_unfinished("interrupted" if interrupted else "stopped", self.outcome.error)
        state = "interrupted" if interrupted else "skipped"
        self.progress.set_state(self.device.name, state, message=reason)
        return self.outcome

    def reservation_lost(self, reason: str) -> None:
        """The device's place was taken mid-run: its unfinished trials failed with ``reason``."""
        self.outcome.ok = False
        self.outcome.error = reason
        self._settle_unfinished("failed", reason)
        self.progress.set_state(self.device.name, "failed", message=reason)

    def _settle_unfinished(self, status: str, reason: str) -> None:
        for plan in self.trials:
            with self.store_lock:
                stored = self.store.trial_state(plan.trial_id).status
            if stored == "ok":
                self.outcome.trials[plan.label] = "ok"
                continue
            self.outcome.trials[plan.label] = status
            with self.store_lock:
                self.store.set_trial_status(plan.trial_id, status, error=reason)

    def _fail_remaining(self, message: str) -> None:
        self.outcome.ok = False
        self.outcome.error = message
        for plan in self.trials:
            if plan.label not in self.outcome.trials:
                self._mark(plan, "failed", message)
        self.progress.set_state(self.device.name, "failed", message=message)

    def _mark(self, plan: TrialPlan, status: str, error: str | None = None) -> None:
        self.outcome.trials[plan.label] = status
        if status == "failed":
            self.outcome.ok = False
            self.outcome.error = self.outcome.error or error
        with self.store_lock:
            self.store.set_trial_status(plan.trial_id, status, error=error)

    # ------------------------------------------------------------------ deploy
    def _deploy(self) -> None:
        items = [
            PushItem(local=self.bundle.path, remote=self.link.bundle_rel, sha256=self.bundle.sha256)
        ]
        model_files = self.model.local_files if self._needs_model() else ()
        for path in model_files:
            rel = path.relative_to(self.model.local_root).as_posix()
            items.append(
                PushItem(
                    local=path, remote=f"{self.model.remote_dir}/{rel}", sha256=sha256_file(path)
                )
            )
        seen: set[Path] = set()
        for plan in self.trials:
            art = plan.variant.artifact_dir
            if art is None or art in seen:
                continue
            seen.add(art)
            items += items_for_directory(art, RemoteLayout.artifact_dir(art.name))
        files = {f.remote: f for plan in self.trials for f in plan.files}
        items += [PushItem(local=f.local, remote=f.remote, sha256=f.sha256) for f in files.values()]
        deploy_files(self.link.transport, items, workdir=self.link.workdir)

    def _needs_model(self) -> bool:
        """Whether any trial of the device runs on the model (``idle`` does not)."""
        from tasks.workloads import needs_model

        return any(needs_model(plan.task) for plan in self.trials)

    # ------------------------------------------------------------------ trials
    def _job_spec(self, plan: TrialPlan, job_id: str, seq_start: int) -> JobSpec:
        exp = self.experiment
        variant = plan.variant
        artifact = None
        if variant.artifact_dir is not None:
            artifact = FileRef(
                path=RemoteLayout.artifact_dir(variant.artifact_dir.name),
                sha256=variant.artifact_sha256 or "",
            )
        meter = self.device.meter
        return JobSpec(
            job_id=job_id,
            run_id=self.run_id,
            model=FileRef(path=self.model.remote_rel, sha256=self.model.sha256),
            model_name=self.model.name,
            artifact=artifact,
            variant=variant.spec,
            embedding_mode=exp.embedding_mode,
            tasks=(TaskSpec(name=plan.task, params=dict(plan.params)),),
            repetitions=exp.repetitions,
            warmup=exp.warmup,
            idle_seconds=exp.idle_seconds,
            window=WindowPolicy(
                min_fresh_samples=exp.min_fresh_samples,
                min_seconds=exp.min_window_s,
                lag_steps=exp.lag_steps,
                max_lag_s=exp.max_lag_s,
            ),
            stability=exp.stability,
            threads=exp.threads,
            meter=MeterSpec(kind=meter.kind, options=meter.options()),
            meter_roots=self.device.meter_roots,
            max_duration_s=exp.max_duration_s,
            seq_start=seq_start,
        )

    def _run_trials(self) -> None:
        """Reattach to jobs still running from before (a resume), then run the rest as
        batches: one agent process per batch, one base-model load per batch."""
        name = self.device.name
        fresh: list[tuple[TrialPlan, Any]] = []
        for plan in self.trials:
            with self.store_lock:
                state = self.store.trial_state(plan.trial_id)
            if state.status == "ok":  # finished before: a resume skips it
                self.outcome.trials[plan.label] = state.status
                self.progress.trial_finished(name)
            elif state.job_id and state.status == "running" and self._agent_job_alive(state.job_id):
                self.log(f"{name}: reattaching to job {state.job_id} from seq {state.last_seq + 1}")
                self._follow_trial(plan, state.job_id, state.last_seq)
            else:
                fresh.append((plan, state))
        while fresh:
            if self.stop_event.is_set():
                for plan, _ in fresh:
                    self._mark(plan, "interrupted", "run interrupted before this trial started")
                return
            # one batch for all (one base-model load); a process per trial when asked
            chunk, later = (fresh, []) if self.batch_trials else (fresh[:1], fresh[1:])
            jobs = self._start_batch(chunk)
            fresh = later
            for i, (plan, job_id, last_seq) in enumerate(jobs):
                if self.stop_event.is_set() and i > 0:
                    # the batch ends its queued jobs as stopped; their trials never ran
                    self._mark(plan, "interrupted", "run interrupted before this trial started")
                    continue
                outcome = self._follow_trial(plan, job_id, last_seq, first_in_batch=i == 0)
                if outcome is None:  # the batch died before this job: start the rest anew
                    fresh = self._states(plan for plan, _, _ in jobs[i:]) + later
                    break

    def _states(self, plans: Any) -> list[tuple[TrialPlan, Any]]:
        with self.store_lock:
            return [(plan, self.store.trial_state(plan.trial_id)) for plan in plans]

    def _start_batch(self, fresh: list[tuple[TrialPlan, Any]]) -> list[tuple[TrialPlan, str, int]]:
        """Write the job specs of ``fresh`` trials and start them as one agent process."""
        name = self.device.name
        jobs = []
        specs = []
        for plan, state in fresh:
            attempt = _attempt_of(state.job_id) + 1
            job_id = safe_id(f"{self.run_id}-{name}-{plan.variant.slug}-{plan.task}-a{attempt}")
            specs.append(self._job_spec(plan, job_id, seq_start=state.last_seq + 1))
            jobs.append((plan, job_id, state.last_seq))
        self._start_jobs(specs)
        with self.store_lock:
            for plan, job_id, _ in jobs:
                self.store.start_attempt(plan.trial_id, job_id)
        return jobs

    def _follow_trial(
        self, plan: TrialPlan, job_id: str, last_seq: int, *, first_in_batch: bool = True
    ) -> FollowOutcome | None:
        """Follow one trial's job to its end; None when its batch died before starting
        it (and it was not the first job of the batch), so that it can run again."""
        name = self.device.name
        self.progress.start_trial(name, plan.label, estimated_queries=plan.estimated_queries)
        outcome = self._follow(plan, job_id, last_seq, retry_unstarted=not first_in_batch)
        if outcome is None:
            return None
        self.outcome.trials[plan.label] = outcome.status
        if outcome.status == "failed":
            self.outcome.ok = False
        self.progress.trial_finished(name)
        return outcome

    def _follow(
        self, plan: TrialPlan, job_id: str, last_seq: int, *, retry_unstarted: bool = False
    ) -> FollowOutcome | None:
        """Follow the trial's job; a job that cannot be followed fails its trial (None,
        with ``retry_unstarted``, for a job whose batch died before starting it)."""
        name = self.device.name
        sink = _TrialEvents(self.store, self.store_lock, plan.trial_id, self.progress, name)
        follower = TrialFollower(
            self.link, sink, self.stop_event, device=name, job_id=job_id, stall_s=self.stall_s
        )
        outcome = follower.follow(last_seq)
        if (
            outcome.error is not None
            and retry_unstarted
            and follower.last_seq == last_seq
            and not self.stop_event.is_set()
            and self._never_started(job_id)
        ):
            self.log(
                f"{name}: job {job_id} never started (its agent process died); starting it again"
            )
            return None
        if outcome.error is not None:
            with self.store_lock:
                self.store.set_trial_status(plan.trial_id, "failed", error=outcome.error)
            self.progress.set_state(name, "failed", message=outcome.error)
            self.outcome.error = self.outcome.error or outcome.error
        return outcome

    def _agent_job_alive(self, job_id: str) -> bool:
        result = self.link.run_agent("status", job_id, timeout_s=60)
        try:
            info = json.loads(result.stdout or "{}")
        except ValueError:
            return False
        return info.get("state") in ("running", "done")

    def _never_started(self, job_id: str) -> bool:
        """Whether the job's journal is empty and no process holds it (its batch died)."""
        result = self.link.run_agent("status", job_id, timeout_s=60)
        try:
            info = json.loads(result.stdout or "{}")
        except ValueError:
            return False
        return info.get("state") == "dead" and info.get("last_seq") is None

    def _start_jobs(self, specs: list[JobSpec]) -> None:
        """Push the job specs and start them as one batch (one agent process)."""
        rels = [f"incoming/{spec.job_id}.json" for spec in specs]
        with tempfile.TemporaryDirectory(prefix="tslm-job-") as tmp:
            items = []
            for spec, rel in zip(specs, rels, strict=True):
                local = Path(tmp) / f"{spec.job_id}.json"
                local.write_text(spec.to_json())
                items.append(PushItem(local=local, remote=rel, sha256=sha256_file(local)))
            deploy_files(self.link.transport, items, workdir=self.link.workdir)
        result = self.link.run_agent("start", *(self.link.remote(r) for r in rels), timeout_s=120)
        if result.exit_code != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            ids = ", ".join(spec.job_id for spec in specs)
            raise AgentError(
                f"{self.device.name}: agent refused job {ids}: "
                f"{detail[-1] if detail else 'exit ' + str(result.exit_code)}"
            )
