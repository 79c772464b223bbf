"""Following one trial's job on its device: its events into an event sink until ``done``.

:class:`TrialFollower` runs ``agent follow --from SEQ`` over an :class:`AgentLink` and
hands every event, in order, to an :class:`EventSink`: stored in batches (at most
:data:`INGEST_BATCH` events or :data:`INGEST_MAX_AGE_S` seconds, and at a job's ``done``
and at errors), and shown one by one. A dropped connection, or a stream silent for :func:`follow_stall_s` seconds,
is followed by a reconnect and a ``follow --from`` the last stored seq, so nothing is
lost or stored twice. When the stop flag is set, the follower asks the agent to stop,
again after every reconnect until the agent acknowledges it, and follows on until its
``done``; a job still running :data:`STOP_GRACE_S` seconds after acknowledging the stop
is reported as ignoring it (and left to ``--resume`` or the person at the board). It returns a :class:`FollowOutcome`; it knows nothing of
the worker that called it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.protocol import Event, parse_event
from orchestrator.transport.base import CommandResult
from orchestrator.transport.errors import RemoteCommandError, TransportError
from tasks.errors import AgentError, ConfigError, ProtocolError

#: events are stored in batches of at most this many, or at window/done boundaries
INGEST_BATCH = 32
#: a batch is stored once its first event is this old: the database follows the dashboard
#: within about this long, and a device costs the controller one transaction per so many
#: seconds instead of one per query (a stored batch is a write transaction, the largest
#: per-device cost of a run); what is not stored yet is replayed after a reconnect
INGEST_MAX_AGE_S = 5.0
#: a follow stream silent for this long is treated as a lost connection (the agent writes
#: a `power` event about once a second, so silence means a dead link, not a quiet job);
#: a false alarm costs one reconnect and a `follow --from`, never an event
FOLLOW_STALL_S = 20.0
FOLLOW_STALL_ENV = "TSLM_FOLLOW_STALL_S"
#: event types that end a batch (stored at once): a job's end and its errors (a trial's
#: windows and scores come just before its `done`)
_FLUSH_TYPES = frozenset({"done", "error"})
#: how long the agent's `stop` command may take
STOP_TIMEOUT_S = 30
#: how long a job may run on after acknowledging a stop (the agent finishes its current
#: query first; a long generation on a slow board takes a while)
STOP_GRACE_S = 120.0


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


class AgentLink(Protocol):
    """What the follower needs of the connection to the device's agent."""

    def stream_agent(self, *args: str, idle_timeout_s: float | None) -> Iterator[str]:
        """The stdout lines of ``agent ARGS...`` as they arrive."""
        ...

    def run_agent(self, *args: str, timeout_s: float) -> CommandResult:
        """Run ``agent ARGS...`` to completion."""
        ...

    def reconnect(self, why: str) -> None:
        """Re-establish a lost connection (raises TransportError when it cannot)."""
        ...


class EventSink(Protocol):
    """Where a followed job's events go."""

    def store(self, events: Sequence[Event]) -> None:
        """Store a batch of events, in order, in one transaction."""
        ...

    def show(self, event: Event) -> None:
        """Show one event as it arrives (the dashboard)."""
        ...


@dataclass(frozen=True)
class FollowOutcome:
    """How following a job ended: the trial status, and why following failed (if it did).

    ``error`` is None when the agent's ``done`` event gave the status (a job the agent
    itself reports failed included); it is set when the job could not be followed.
    """

    status: str
    error: str | None = None


class TrialFollower:
    """Follows one job on a device until its ``done`` event."""

    def __init__(
        self,
        link: AgentLink,
        sink: EventSink,
        stop: threading.Event,
        *,
        device: str,
        job_id: str,
        stall_s: float,
        stop_grace_s: float = STOP_GRACE_S,
        batch_age_s: float = INGEST_MAX_AGE_S,
    ) -> None:
        self.link = link
        self.sink = sink
        self.stop = stop
        self.device = device
        self.job_id = job_id
        self.stall_s = stall_s
        self.last_seq = 0
        self._batch: list[Event] = []
        #: when the oldest event of the pending batch arrived (monotonic seconds)
        self._batch_since = 0.0
        self.batch_age_s = batch_age_s
        self.stop_grace_s = stop_grace_s
        #: when the agent acknowledged the stop request (None: not yet)
        self.stop_acknowledged_at: float | None = None
        #: how many times the stop request was sent (retried after a lost link)
        self.stop_requests = 0

    def follow(self, last_seq: int) -> FollowOutcome:
        """Follow the job's events after ``last_seq`` until ``done``; returns the outcome."""
        self.last_seq = last_seq
        while True:
            try:
                self._stop_if_asked()
                return FollowOutcome(self._follow_stream())
            except RemoteCommandError as exc:
                # the agent's `follow` itself failed (job dead, unknown job): not a link problem
                self._flush()
                detail = _agent_error_line(exc.stderr) or exc.message
                return FollowOutcome(
                    "failed", f"{self.device}: following job {self.job_id} failed: {detail}"
                )
            except TransportError as exc:
                self._flush()
                self.link.reconnect(f"connection lost while following {self.job_id}: {exc.message}")
            except AgentError as exc:
                self._flush()
                return FollowOutcome("failed", exc.message)

    def _follow_stream(self) -> str:
        """One ``agent follow --from``: events in order until ``done``; its status."""
        lines = self.link.stream_agent(
            "follow", self.job_id, "--from", str(self.last_seq + 1), idle_timeout_s=self.stall_s
        )
        done_status = None
        for line in lines:
            event = self._next_event(line)
            if event is None:
                continue
            self._take(event)
            if event.type == "done":
                done_status = event.get("status")
                break
            self._stop_if_asked()
        self._flush()
        if done_status is not None:
            return str(done_status)
        # follow ended without `done`: the agent died on the device
        raise AgentError(
            f"{self.device}: job {self.job_id} ended without a 'done' event "
            "(the agent process died on the device)"
        )

    def _next_event(self, line: str) -> Event | None:
        """The event on ``line`` when it is the next one; None for blank or replayed lines."""
        if not line.strip():
            return None
        event = parse_event(line, where=f"{self.device} job {self.job_id}")
        if event.seq <= self.last_seq:
            return None  # already stored before a reconnect
        if event.seq != self.last_seq + 1:
            raise ProtocolError(
                f"{self.device} job {self.job_id}: event seq {event.seq} "
                f"follows {self.last_seq}: events are missing"
            )
        return event

    def _take(self, event: Event) -> None:
        """Queue ``event`` for storing (storing the batch when it is due) and show it."""
        now = time.monotonic()
        if not self._batch:
            self._batch_since = now
        self._batch.append(event)
        self.last_seq = event.seq
        self.sink.show(event)
        if (
            len(self._batch) >= INGEST_BATCH
            or event.type in _FLUSH_TYPES
            or now - self._batch_since >= self.batch_age_s
        ):
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            self.sink.store(list(self._batch))
            self._batch.clear()

    def _stop_if_asked(self) -> None:
        """When the run is stopping: ask the agent to stop until it acknowledges, then give
        it :attr:`stop_grace_s` seconds to end the job."""
        if not self.stop.is_set():
            return
        if self.stop_acknowledged_at is not None:
            waited = time.monotonic() - self.stop_acknowledged_at
            if waited > self.stop_grace_s:
                raise AgentError(
                    f"{self.device}: job {self.job_id} ignored the stop request for "
                    f"{waited:.0f} s (grace {self.stop_grace_s:g} s); it may still run on the "
                    "device",
                    hint="`tslm-fleet run --resume RUN_ID` reattaches to it, or stop it on "
                    "the device",
                )
            return
        self.stop_requests += 1
        try:
            self.link.run_agent("stop", self.job_id, timeout_s=STOP_TIMEOUT_S)
        except TransportError:
            return  # not acknowledged: asked again after the follow loop reconnects
        self.stop_acknowledged_at = time.monotonic()
