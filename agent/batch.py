"""A batch: the jobs of one device, run one after the other by one agent process.

The controller hands a device all its pending trials of a run as one batch, so that the
base model is loaded once (:class:`agent.models.LoadedModels`) and each variant only
swaps its embedding and head. Every job keeps its own directory, journal, seq numbers,
windows, idle baseline and ``done`` event, exactly as a job run alone. A queued job is
alive (its lock is held) until its turn; if the process dies, every job it had not
finished is dead, and a job it never started has an empty journal.

SIGTERM or SIGINT stops the running job after its current query, and every job still
queued then ends at once with ``done`` status ``stopped``.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, TextIO

from agent.jobs import JobLocks, JobPaths, Workdir, write_pid
from agent.models import LoadedModels
from agent.protocol import JobSpec
from agent.runner import STOP_SIGNALS, JobRunner, run_job


class _BatchControl:
    """The stop request of a batch and the runner it applies to."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.runner: JobRunner | None = None
        self._lock = threading.Lock()

    def stop(self, reason: str) -> None:
        with self._lock:
            self.reason = self.reason or reason
            if self.runner is not None:
                self.runner.request_stop(reason)

    def attach(self, runner: JobRunner) -> None:
        with self._lock:
            self.runner = runner
            if self.reason is not None:
                runner.request_stop(self.reason)


def run_batch(
    specs: list[JobSpec],
    workdir: Workdir,
    paths: list[JobPaths],
    locks: JobLocks,
    echo: TextIO | None,
) -> list[str]:
    """Run the claimed jobs in order in this process; their done statuses, in order."""
    models = LoadedModels()
    control = _BatchControl()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(
                sig, lambda signum, _frame: control.stop(signal.Signals(signum).name)
            )
    statuses: list[str] = []
    job_locks = locks.job_locks()
    try:
        for spec, job_paths, job_lock in zip(specs, paths, job_locks, strict=True):
            write_pid(job_paths, os.getpid())
            locks.record_owner(spec.job_id, os.getpid())
            statuses.append(
                run_job(
                    spec,
                    workdir,
                    job_paths,
                    job_lock,
                    echo,
                    models=models,
                    on_runner=control.attach,
                )
            )
    finally:
        for job_lock in job_locks:
            job_lock.release()
        _close(locks.device_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return statuses


def _close(fd: Any) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
