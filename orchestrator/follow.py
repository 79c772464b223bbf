"""Following one trial's job on its device: its events into the database until ``done``.

The device worker runs ``agent follow --from SEQ`` and stores every event in order, in
batches of at most :data:`INGEST_BATCH` events or at window/score/done/error/query
boundaries. A dropped connection, or a stream silent for :func:`follow_stall_s` seconds,
is followed by a reconnect and a ``follow --from`` the last stored seq, so nothing is
lost or stored twice. A job that cannot be followed marks its trial and device failed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from agent.protocol import parse_event
from tasks.errors import (
    AgentError,
    ConfigError,
    ProtocolError,
    RemoteCommandError,
    TransportError,
)

if TYPE_CHECKING:
    from orchestrator.scheduler import DeviceWorker, TrialPlan

#: events are stored in batches of at most this many, or at window/done boundaries
INGEST_BATCH = 32
#: a follow stream silent for this long is treated as a lost connection (the agent writes
#: a `power` event about once a second, so silence means a dead link, not a quiet job);
#: a false alarm costs one reconnect and a `follow --from`, never an event
FOLLOW_STALL_S = 20.0
FOLLOW_STALL_ENV = "TSLM_FOLLOW_STALL_S"


def follow_stall_s() -> float:
    """The follow stall limit: ``$TSLM_FOLLOW_STALL_S`` when set, else :data:`FOLLOW_STALL_S`."""
    raw = os.environ.get(FOLLOW_STALL_ENV)
    if not raw:
        return FOLLOW_STALL_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ConfigError(
            f"{FOLLOW_STALL_ENV}={raw!r} is not a positive number of seconds",
            hint=f"unset it to use the default ({FOLLOW_STALL_S:g} s)",
        )
    return value


def _agent_error_line(stderr: str) -> str | None:
    """The agent's ``error: ...`` line (its last stderr line is usually the hint)."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    return errors[-1] if errors else (lines[-1] if lines else None)


class TrialFollower:
    """Follows one job of a device worker's trial, through the worker's connection."""

    def __init__(self, worker: DeviceWorker, plan: TrialPlan, job_id: str) -> None:
        self.worker = worker
        self.plan = plan
        self.job_id = job_id

    def follow(self, last_seq: int) -> str:
        """Follow a job's events into the database until `done`; returns the trial status."""
        worker, plan, job_id = self.worker, self.plan, self.job_id
        name = worker.device.name
        stop_sent = False
        batch: list[Any] = []

        def flush() -> None:
            if batch:
                with worker.store_lock:
                    worker.store.ingest_events(plan.trial_id, [e.to_dict() for e in batch])
                batch.clear()

        while True:
            if worker.stop_event.is_set() and not stop_sent:
                self._request_stop()
                stop_sent = True
            try:
                done_status = None
                argv = worker.agent_argv("follow", job_id, "--from", str(last_seq + 1))
                for line in worker.transport.stream(argv, idle_timeout_s=worker.stall_s):
                    if not line.strip():
                        continue
                    event = parse_event(line, where=f"{name} job {job_id}")
                    if event.seq <= last_seq:
                        continue  # already stored before a reconnect
                    if event.seq != last_seq + 1:
                        raise ProtocolError(
                            f"{name} job {job_id}: event seq {event.seq} "
                            f"follows {last_seq}: events are missing"
                        )
                    batch.append(event)
                    last_seq = event.seq
                    worker.progress.apply_event(name, event)
                    if len(batch) >= INGEST_BATCH or event.type in (
                        "window",
                        "score",
                        "done",
                        "error",
                        "query",
                    ):
                        flush()
                    if event.type == "done":
                        done_status = event.get("status")
                        break
                    if worker.stop_event.is_set() and not stop_sent:
                        self._request_stop()
                        stop_sent = True
                flush()
                if done_status is not None:
                    return "ok" if done_status == "ok" else done_status
                # follow ended without `done`: the agent died on the device
                raise AgentError(
                    f"{name}: job {job_id} ended without a 'done' event "
                    "(the agent process died on the device)"
                )
            except RemoteCommandError as exc:
                # the agent's `follow` itself failed (job dead, unknown job): not a link problem
                flush()
                detail = _agent_error_line(exc.stderr) or exc.message
                return self._failed(f"{name}: following job {job_id} failed: {detail}")
            except TransportError as exc:
                flush()
                worker.reconnect(f"connection lost while following {job_id}: {exc.message}")
            except AgentError as exc:
                flush()
                return self._failed(exc.message)

    def _failed(self, message: str) -> str:
        """Mark the trial and its device failed with ``message``; returns ``"failed"``."""
        worker = self.worker
        with worker.store_lock:
            worker.store.set_trial_status(self.plan.trial_id, "failed", error=message)
        worker.progress.set_state(worker.device.name, "failed", message=message)
        worker.outcome.ok = False
        worker.outcome.error = worker.outcome.error or message
        return "failed"

    def _request_stop(self) -> None:
        try:
            self.worker.transport.run(
                self.worker.agent_argv("stop", self.job_id), check=False, timeout_s=30
            )
        except TransportError:
            pass  # the follow loop reconnects and asks again
