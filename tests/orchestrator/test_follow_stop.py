"""Ctrl-C's stop request: retried after a lost link until the agent acknowledges it, and
a job that runs on past the grace period is reported as ignoring it.

The link is a stand-in (an agent that ignores a stop cannot be had otherwise); it speaks
the real event protocol, and the follower under test is the real one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from agent.protocol import Event, make_event
from orchestrator.follow import TrialFollower
from orchestrator.transport.base import CommandResult
from orchestrator.transport.errors import ConnectError


class Sink:
    def __init__(self) -> None:
        self.stored: list[Event] = []

    def store(self, events: Sequence[Event]) -> None:
        self.stored.extend(events)

    def show(self, event: Event) -> None:
        pass


class Link:
    """An agent whose job emits power events; it ends with ``done`` once stopped, unless
    ``ignores_stop``. The first ``stop_failures`` stop requests hit a dead link."""

    def __init__(self, *, stop_failures: int = 0, ignores_stop: bool = False) -> None:
        self.stop_failures = stop_failures
        self.ignores_stop = ignores_stop
        self.stopped = False
        self.stop_calls = 0
        self.reconnects: list[str] = []
        self.down = False

    def stream_agent(self, *args: str, idle_timeout_s: float | None) -> Iterator[str]:
        seq = int(args[args.index("--from") + 1]) - 1
        while True:
            seq += 1
            if self.down:
                raise ConnectError("the link is down")
            if self.stopped and not self.ignores_stop:
                done = make_event(
                    seq, "done", time.monotonic(), status="stopped", queries=0, duration_s=1.0
                )
                yield done.to_json()
                return
            power = make_event(
                seq, "power", time.monotonic(), watts=1.0, samples=10, fresh_samples=2
            )
            yield power.to_json()
            time.sleep(0.01)

    def run_agent(self, *args: str, timeout_s: float) -> CommandResult:
        assert args[0] == "stop"
        self.stop_calls += 1
        if self.stop_calls <= self.stop_failures:
            self.down = True  # the link dropped: the stream breaks too, until reconnected
            raise ConnectError("the link is down")
        self.stopped = True
        return CommandResult(exit_code=0, stdout='{"state": "running"}', stderr="")

    def reconnect(self, why: str) -> None:
        self.reconnects.append(why)
        self.down = False


def follower(link: Link, grace_s: float = 5.0) -> TrialFollower:
    stop = threading.Event()
    stop.set()  # Ctrl-C was pressed
    return TrialFollower(
        link, Sink(), stop, device="pi4", job_id="job-1", stall_s=5.0, stop_grace_s=grace_s
    )


def test_the_stop_is_retried_after_a_reconnect_until_acknowledged() -> None:
    link = Link(stop_failures=2)
    f = follower(link)
    outcome = f.follow(0)
    assert outcome.status == "stopped" and outcome.error is None
    assert link.stop_calls == 3 and f.stop_requests == 3
    assert len(link.reconnects) == 2  # each lost link reconnected before asking again
    assert f.stop_acknowledged_at is not None


def test_a_job_ignoring_the_stop_past_the_grace_period_is_reported() -> None:
    link = Link(ignores_stop=True)
    f = follower(link, grace_s=0.3)
    started = time.monotonic()
    outcome = f.follow(0)
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert "pi4: job job-1 ignored the stop request for" in outcome.error
    assert "grace 0.3 s" in outcome.error
    assert 0.3 <= time.monotonic() - started < 10
    assert link.stop_calls == 1  # acknowledged once: not asked again
