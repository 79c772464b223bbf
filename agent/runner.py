"""The measurement method: one job from ``hello`` to ``done``.

hello -> verifying (sha256 of model and artifact) -> loading (timed, its own ``load``
window) -> preparing the tasks -> warm-up queries (not recorded) -> idle baseline (the
median power with the model loaded, an ``idle`` window) -> per task and repetition, the
queries back to back, grouped into ``queries`` windows -> ``score`` events -> done.

The windows, their energies and their ``query`` and ``window`` events are kept by
:class:`agent.windows.WindowRecorder`.

With the ``none`` meter every energy field is null and ``under_resolved`` is False
(nothing to resolve); a warning says so once.
"""

from __future__ import annotations

import csv
import os
import platform
import signal
import socket
import statistics
import threading
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from agent import memory, provenance, stability, sysinfo
from agent.jobs import JobPaths, Workdir, task_params_inside
from agent.journal import EventEmitter, Journal
from agent.models import LoadedModels
from agent.protocol import PROTOCOL_VERSION, JobSpec
from agent.windows import WindowRecorder
from tasks import __version__
from tasks.errors import ModelError, TslmError
from tasks.hashing import sha256_path

POWER_EVENT_PERIOD_S = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Stopped(Exception):
    """Raised inside the runner when a stop was requested between two steps."""


class JobRunner:
    """Runs one validated job and writes its events through ``emit``."""

    def __init__(
        self,
        spec: JobSpec,
        workdir: Workdir,
        paths: JobPaths,
        emitter: EventEmitter,
        sys_root: Path = sysinfo.ROOT,
        models: LoadedModels | None = None,
    ) -> None:
        self.spec = spec
        #: the base model, shared by the jobs of one agent process (one load per batch)
        self.models = models if models is not None else LoadedModels()
        self.workdir = workdir
        self.paths = paths
        self.emitter = emitter
        self.sys_root = sys_root
        self.stop_requested = threading.Event()
        self.stop_reason: str | None = None
        self.queries_done = 0
        self.phase = "starting"
        self._t_job = time.monotonic()
        self._windows = WindowRecorder(spec, emitter, sys_root)
        self._meter: Any = None
        self._sampler: Any = None
        self._power_stop = threading.Event()
        #: the stable start and the idle drift after the queries (the done event's record)
        self.stability: dict[str, Any] = {}
        self._lag_ranged = False
        #: whether the peak resident set was reset when the job started (see agent.memory)
        self._peak_reset = False
        #: decode seconds per token of every query that generated two tokens or more
        self._decode_s: list[float] = []

    # ------------------------------------------------------------------ control

    def request_stop(self, reason: str) -> None:
        """Finish the current query, then end with ``done`` status ``stopped``."""
        if not self.stop_requested.is_set():
            self.stop_reason = reason
            self.stop_requested.set()

    def _check_stop(self) -> None:
        elapsed = time.monotonic() - self._t_job
        if not self.stop_requested.is_set() and elapsed > self.spec.max_duration_s:
            self.emitter.emit(
                "warning",
                code="max_duration",
                message=f"job {self.spec.job_id}: stopped after {elapsed:.0f} s, "
                f"the limit is {self.spec.max_duration_s:.0f} s (limits."
                "max_duration_s)",
            )
            self.request_stop("max_duration")
        if self.stop_requested.is_set():
            raise _Stopped

    def _set_phase(self, phase: str, **extra: Any) -> None:
        self.phase = phase
        self.emitter.emit("phase", phase=phase, **extra)

    @property
    def _measures(self) -> bool:
        return self._windows.measures

    @property
    def idle_power_w(self) -> float | None:
        """The median power of the idle baseline (None before it, or without readings)."""
        return self._windows.idle_power_w

    # ------------------------------------------------------------------ main

    def run(self) -> str:
        """Run the job; returns the done status (ok, stopped or failed). Never raises."""
        status = "failed"
        self._peak_reset = memory.reset_peak()
        try:
            self._run()
            status = "ok"
        except _Stopped:
            status = "stopped"
        except TslmError as exc:
            self._error(exc.message, type(exc).__name__, hint=exc.hint)
        except Exception as exc:
            text = traceback.format_exc()
            print(text, flush=True)
            self._error(f"{type(exc).__name__}: {exc}", type(exc).__name__, traceback=text[-4000:])
        finally:
            status = self._finish(status)
        return status

    def _error(self, message: str, error_type: str, **extra: Any) -> None:
        extra = {k: v for k, v in extra.items() if v is not None}
        self.emitter.emit(
            "error",
            message=f"job {self.spec.job_id}: {self.phase} failed: {message}",
            error_type=error_type,
            phase=self.phase,
            **extra,
        )

    def _run(self) -> None:
        from agent.meters import create_meter

        spec = self.spec
        self._meter = self._windows.meter = create_meter(spec.meter.kind, **spec.meter.options)
        uses_model = _uses_model(spec)
        # a job of model-free tasks (idle) never imports torch
        threads = _set_threads(spec.threads) if uses_model else 1
        self._hello(threads)
        if not self._measures:
            reason = getattr(self._meter, "reason", None) or self._meter.description
            self.emitter.emit(
                "warning",
                code="no_meter",
                message=(
                    f"job {spec.job_id}: energy is not measured (meter '{spec.meter.kind}': "
                    f"{reason}); energy fields are null"
                ),
            )
        self._set_phase("verifying")
        model_path, artifact = self._verify() if uses_model else (None, None)
        self._check_stop()
        self._start_sampler()
        model = tokenizer = None
        if uses_model:
            model, tokenizer = self._load(model_path, artifact)
        self._check_stop()
        self._set_phase("preparing")
        prepared = self._prepare(model, tokenizer)
        self._warmup(prepared)
        self._range_lag()
        self._settle()
        self._idle()
        for name, task in prepared:
            for rep in range(spec.repetitions):
                self._repetition(name, task, rep)
        self._idle_after()

    def _hello(self, threads: int) -> None:
        meter = self._meter
        total_ram, _ = sysinfo.memory_bytes(self.sys_root)
        self.emitter.emit(
            "hello",
            protocol=PROTOCOL_VERSION,
            job_id=self.spec.job_id,
            agent_version=__version__,
            bundle_sha256=sysinfo.bundle_sha256(),
            host=socket.gethostname(),
            board=sysinfo.board_model(self.sys_root),
            python=platform.python_version(),
            torch=sysinfo.package_version("torch"),
            transformers=sysinfo.package_version("transformers"),
            threads=threads,
            meter_kind=self.spec.meter.kind,
            meter_description=meter.description,
            meter_period_s=meter.nominal_period_s,
            run_id=self.spec.run_id,
            variant=self.spec.variant,
            model_name=self.spec.model_name,
            cpu_model=sysinfo.cpu_model(self.sys_root),
            ram_total_bytes=total_ram,
            os=sysinfo.os_name(self.sys_root),
            pid=os.getpid(),
            provenance={
                **provenance.system(self.sys_root),
                **provenance.meter(meter, self.spec.meter.kind),
            },
        )

    def _verify(self) -> tuple[Path, Any]:
        spec = self.spec
        model_path = self.workdir.resolve_inside(spec.model.path, "job.json model.path")
        if not model_path.exists():
            raise ModelError(
                f"model {spec.model.path} is not in {self.workdir.root}",
                hint="push the model to the device (tslm-fleet deploy)",
            )
        if self.models.is_verified(model_path, spec.model.sha256):
            actual = spec.model.sha256  # checked by an earlier job of this agent process
        else:
            actual = sha256_path(model_path)
        if actual != spec.model.sha256:
            raise ModelError(
                f"model {spec.model.path}: sha256 {actual} does not match the "
                f"job's {spec.model.sha256} (corrupted or incomplete copy)",
                hint="push the model again (tslm-fleet deploy)",
            )
        self.models.mark_verified(model_path, actual)
        if spec.artifact is None:
            return model_path, None
        art_path = self.workdir.resolve_inside(spec.artifact.path, "job.json artifact.path")
        from tasks.artifacts import load_artifact

        # verifies the manifest against the job's sha256, then every file it lists
        return model_path, load_artifact(art_path, spec.artifact.sha256)

    def _start_sampler(self) -> None:
        from agent.sampler import Sampler

        self._sampler = self._windows.sampler = Sampler(self._meter, on_event=self._on_meter_event)
        self._sampler.start()
        threading.Thread(target=self._power_loop, name="power-events", daemon=True).start()

    def _on_meter_event(self, level: str, message: str) -> None:
        self.emitter.emit("warning", code=f"meter_{level}", message=message)

    def _power_loop(self) -> None:
        while not self._power_stop.wait(POWER_EVENT_PERIOD_S):
            latest = self._sampler.latest()
            stats = self._sampler.stats()
            self.emitter.emit(
                "power",
                watts=None if latest is None else latest.watts,
                samples=stats.total,
                fresh_samples=stats.fresh,
                in_gap=stats.in_gap,
                age_s=None if latest is None else round(time.monotonic() - latest.t, 3),
            )

    def _load(self, model_path: Path, artifact: Any) -> tuple[Any, Any]:
        from tasks.models import ModelRef

        # the sha256 is verified already: a ModelRef keeps load_model from hashing again
        # inside the timed load window
        ref = ModelRef(
            name=self.spec.model_name,
            path=model_path,
            sha256=self.spec.model.sha256,
            kind="dir" if model_path.is_dir() else "gguf",
        )
        # the base model is loaded by the first job of the agent process, whose load window
        # holds the load's energy; later jobs only swap the variant's embedding and head
        # (the phase events' times give the swap's duration) and record no load window
        reuse = self.models.has_base(ref)
        self._set_phase("loading", base_model="reuse" if reuse else "load")
        before = None if reuse else self._thermal()
        t0 = time.monotonic()
        # a GGUF is de-quantised once per device and kept as safetensors in the work
        # directory: later processes load the converted copy (the load window records either)
        model, tokenizer = self.models.model_for(
            ref,
            self.workdir.root / "cache" / "models",
            artifact,
            self.spec.embedding_mode,
        )
        t1 = time.monotonic()
        if not reuse:
            self._windows.emit_window("load", None, None, t0, t1, 0, before, self._thermal())
        return model, tokenizer

    def _prepare(self, model: Any, tokenizer: Any) -> list[tuple[str, Any]]:
        from tasks.workloads import get_task

        prepared = []
        for i, task_spec in enumerate(self.spec.tasks):
            task = get_task(task_spec.name)
            raw = task_params_inside(task_spec.params, self.workdir, f"job.json tasks[{i}].params")
            params = task.parse_params(raw)
            prepared.append((task_spec.name, task.prepare(model, tokenizer, params)))
        return prepared

    def _warmup(self, prepared: list[tuple[str, Any]]) -> None:
        # a model-free task (idle) has nothing to warm up
        prepared = [(name, task) for name, task in prepared if _task_uses_model(name)]
        if self.spec.warmup <= 0 or not prepared:
            return
        self._set_phase("warmup", queries=self.spec.warmup)
        for _, task in prepared:
            count = task.num_queries()
            for i in range(self.spec.warmup if count else 0):
                self._check_stop()
                task.run_query(i % count)

    def _range_lag(self) -> None:
        """Measure the meter's lag from known load steps (``window.lag_steps`` of them)."""
        steps = self.spec.window.lag_steps
        if steps <= 0 or not self._measures:
            return
        from agent import lag

        period = float(self._meter.nominal_period_s)
        lengths = lag.step_lengths(steps, period)
        self._set_phase("ranging", steps=steps, seconds=round(sum(map(sum, lengths)), 1))
        t0 = time.monotonic()
        intervals = lag.run_steps(lengths, lag.spin, stop=self.stop_requested.is_set)
        self._check_stop()
        t1 = time.monotonic()
        self._sampler.wait_for(t1, self._windows._catch_up_s())
        estimate = lag.estimate_lag(
            self._sampler.samples(t0 - period, time.monotonic()),
            intervals,
            meter_period_s=period,
            max_lag_s=self.spec.window.max_lag_s,
        )
        self._set_phase("ranged", **estimate.to_event())
        if estimate.lag_s is None:
            self._windows.lag_problem = estimate.problem
            self.emitter.emit(
                "warning",
                code="meter_lag",
                message=(
                    f"job {self.spec.job_id}: the lag of {self._meter.description} could not "
                    f"be established ({estimate.problem}); energies are not shifted and are "
                    "flagged under-resolved"
                ),
            )
        else:
            self._windows.lag_s = estimate.lag_s
            self._lag_ranged = True

    def _settle(self) -> None:
        """Wait for a stable start (idle power and temperature), within the time limit."""
        policy = self.spec.stability
        observable = self._measures or sysinfo.cpu_temp_c(self.sys_root) is not None
        waits = policy.max_wait_s > 0 and observable
        if waits:
            self._set_phase("settling", **policy.to_dict())

        def wait(seconds: float) -> None:
            self.stop_requested.wait(seconds)
            self._check_stop()

        settled = stability.settle(
            policy,
            samples=self._sampler.samples if self._measures else None,
            temp_c=lambda: sysinfo.cpu_temp_c(self.sys_root),
            wait=wait,
        )
        self.stability.update(settled.to_dict())
        if waits:
            self._set_phase("settled", **settled.to_dict())
        if settled.stable is False:
            self.emitter.emit(
                "warning",
                code="unstable_start",
                message=(
                    f"job {self.spec.job_id}: the board did not settle within "
                    f"{policy.max_wait_s:g} s (stability.max_wait_s): {settled.observed}; "
                    "the trial runs anyway and is flagged"
                ),
            )

    def _idle(self) -> None:
        self._set_phase("idle", seconds=self.spec.idle_seconds)
        if self.spec.idle_seconds <= 0:
            return
        before = self._thermal()
        t0 = time.monotonic()
        deadline = t0 + self.spec.idle_seconds
        while (left := deadline - time.monotonic()) > 0:
            self.stop_requested.wait(min(left, 0.5))
            self._check_stop()
        t1 = time.monotonic()
        self._windows.wait_for_reading_after(t1)
        energy = self._windows.emit_window("idle", None, None, t0, t1, 0, before, self._thermal())
        self._windows.idle_power_w = None if energy is None else energy.median_power_w
        if self._measures and self.idle_power_w is None:
            self.emitter.emit(
                "warning",
                code="no_idle_baseline",
                message=(
                    f"job {self.spec.job_id}: no power readings during the {t1 - t0:.1f} s idle "
                    "period; net energies are null"
                ),
            )

    def _idle_after(self) -> None:
        """Measure the idle power again after the queries and flag a drift from before."""
        if self.spec.idle_seconds <= 0 or not self._measures:
            return
        self._set_phase("idle_after", seconds=self.spec.idle_seconds)
        before = self._thermal()
        t0 = time.monotonic()
        self.stop_requested.wait(self.spec.idle_seconds)
        self._check_stop()
        t1 = time.monotonic()
        self._windows.wait_for_reading_after(t1)
        energy = self._windows.emit_window(
            "idle_after", None, None, t0, t1, 0, before, self._thermal()
        )
        after_w = None if energy is None else energy.median_power_w
        change = stability.drift(self.idle_power_w, after_w)
        threshold = self.spec.stability.drift_threshold
        drifted = None if change is None else abs(change) > threshold
        self.stability.update(
            idle_before_w=self.idle_power_w,
            idle_after_w=after_w,
            idle_drift=None if change is None else round(change, 4),
            drift_threshold=threshold,
            drifted=drifted,
        )
        if drifted:
            self.emitter.emit(
                "warning",
                code="idle_drift",
                message=(
                    f"job {self.spec.job_id}: the idle power drifted {change:+.1%} from "
                    f"{self.idle_power_w:.3g} W before the queries to {after_w:.3g} W after "
                    f"(stability.drift_threshold {threshold:.1%})"
                ),
            )

    # ------------------------------------------------------------------ queries

    def _repetition(self, name: str, task: Any, rep: int) -> None:
        self._set_phase(
            "running",
            task=name,
            rep=rep,
            queries=task.num_queries(),
            repetitions=self.spec.repetitions,
        )
        results = []
        self._windows.start_repetition()
        stopped = False
        for i in range(task.num_queries()):
            try:
                self._check_stop()
            except _Stopped:
                stopped = True
                break
            self._windows.open(name, rep)
            result = task.run_query(i)
            results.append(result)
            if result.decode_s_per_token is not None:
                self._decode_s.append(result.decode_s_per_token)
            self._windows.add(result)
            self.queries_done += 1
            self._windows.close_if_full()
            self._windows.flush(force=False)
        self._windows.close(last_of_rep=True)
        self._windows.flush(force=True)
        if stopped:
            raise _Stopped
        for score in task.scores(results):
            self.emitter.emit(
                "score",
                task=name,
                metric=score.metric,
                value=score.value,
                rep=rep,
                details=dict(score.details),
            )
        self.emitter.sync()

    def _thermal(self) -> sysinfo.ThermalState:
        return sysinfo.thermal_state(self.sys_root)

    # ------------------------------------------------------------------ end

    def _finish(self, status: str) -> str:
        self._windows.close(last_of_rep=True)
        if self._windows.pending:
            try:
                self._windows.flush(force=True)
            except Exception as exc:  # the done event must still be written
                self._error(f"could not write the last window: {exc}", type(exc).__name__)
                status = "failed"
        self._power_stop.set()
        if self._sampler is not None:
            try:
                self._sampler.stop()
                if self.spec.record_samples and self._measures:
                    self._write_samples()
            except Exception as exc:
                self.emitter.emit(
                    "warning",
                    code="samples_not_saved",
                    message=f"job {self.spec.job_id}: power samples not saved: {exc}",
                )
        elif self._meter is not None:
            self._meter.close()
        extra = {"reason": self.stop_reason} if status == "stopped" else {}
        stats = self._sampler.stats() if self._sampler is not None and self._measures else None
        peak = memory.peak_rss(self._peak_reset)
        self.emitter.emit(
            "done",
            status=status,
            queries=self.queries_done,
            duration_s=time.monotonic() - self._t_job,
            provenance=provenance.measured(
                self._windows.lag_s, self._lag_ranged, self._windows.lag_problem, stats
            ),
            stability=self.stability,
            peak_rss_bytes=peak.peak_rss_bytes,
            peak_rss_scope=peak.scope,
            decode_s_per_token=statistics.median(self._decode_s) if self._decode_s else None,
            decode_queries=len(self._decode_s),
            **extra,
        )
        self.emitter.sync()
        return status

    def _write_samples(self) -> None:
        tmp = self.paths.samples.with_name(".samples.csv.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["t", "watts", "volts", "amps", "fresh"])
            for s in self._sampler.samples(self._t_job, time.monotonic()):
                writer.writerow([f"{s.t:.6f}", s.watts, s.volts, s.amps, int(s.fresh)])
        tmp.replace(self.paths.samples)


def _task_uses_model(name: str) -> bool:
    from tasks.workloads import needs_model

    return needs_model(name)


def _uses_model(spec: JobSpec) -> bool:
    """Whether any task of the job runs on the model (the ``idle`` task does not)."""
    return any(_task_uses_model(t.name) for t in spec.tasks)


def _set_threads(threads: int | None) -> int:
    from tasks.workloads import set_threads

    return set_threads(threads)


def run_job(
    spec: JobSpec,
    workdir: Workdir,
    paths: JobPaths,
    locks: Any,
    echo: TextIO | None,
    models: LoadedModels | None = None,
    on_runner: Any = None,
) -> str:
    """Run a claimed job in this process; SIGTERM/SIGINT stop it gracefully.

    Returns the done status. The locks (anything with ``release()``) are released when
    the job has ended. ``models``: the base model shared with the other jobs of this
    process; ``on_runner``: called with the runner before it starts (a batch uses it to
    stop the running job and keep the next ones from starting).
    """
    journal = Journal(paths.journal)
    emitter = EventEmitter(journal, seq_start=spec.seq_start, echo=echo)
    runner = JobRunner(spec, workdir, paths, emitter, models=models)
    if on_runner is not None:
        on_runner(runner)
    previous = {}
    if on_runner is None and threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(
                sig, lambda signum, _frame: runner.request_stop(signal.Signals(signum).name)
            )
    try:
        return runner.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        journal.close()
        locks.release()
