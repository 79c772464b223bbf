"""How a followed job's events are grouped into stored batches: by age and size, and at
a job's end and its errors, never one transaction per query.

The link is a stand-in that replays a realistic trial's event stream
(``tests/db/factories.py``) in the real protocol; the follower under test is the real one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from agent.protocol import Event
from orchestrator.follow import INGEST_BATCH, TrialFollower
from orchestrator.transport.base import CommandResult
from tests.db.factories import trial_events


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.shown: list[int] = []

    def store(self, events: Sequence[Event]) -> None:
        self.batches.append(list(events))

    def show(self, event: Event) -> None:
        self.shown.append(event.seq)


class Link:
    """The stored stream of one job, replayed from ``--from``."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def stream_agent(self, *args: str, idle_timeout_s: float | None) -> Iterator[str]:
        start = int(args[args.index("--from") + 1])
        for event in self.events:
            if event["seq"] >= start:
                yield json.dumps(event)

    def run_agent(self, *args: str, timeout_s: float) -> CommandResult:
        raise AssertionError("nothing to run")

    def reconnect(self, why: str) -> None:
        raise AssertionError("the link never drops")


def follow(events: list[dict[str, Any]], batch_age_s: float, status: str = "ok") -> Sink:
    sink = Sink()
    follower = TrialFollower(
        Link(events),
        sink,
        threading.Event(),
        device="pi4",
        job_id="job-1",
        stall_s=5.0,
        batch_age_s=batch_age_s,
    )
    assert follower.follow(0).status == status
    return sink


def test_queries_are_stored_in_batches_and_a_jobs_end_at_once() -> None:
    events = trial_events(reps=2, queries_per_rep=12, window_queries=4)
    sink = follow(events, batch_age_s=3600.0)
    stored = [e.seq for batch in sink.batches for e in batch]
    assert stored == [e["seq"] for e in events]  # each event once, in order
    assert sink.shown == stored  # and the dashboard saw each as it came
    for batch in sink.batches:
        assert len(batch) <= INGEST_BATCH
        # a batch ends at done or an error, or when it is full
        assert all(e.type not in ("done", "error") for e in batch[:-1])
        if len(batch) < INGEST_BATCH:
            assert batch[-1].type in ("done", "error")
    queries = sum(e["type"] == "query" for e in events)
    assert len(sink.batches) < queries / 2  # not a transaction per query


def test_a_batch_is_stored_once_its_first_event_is_old_enough() -> None:
    events = trial_events(reps=1, queries_per_rep=4)
    sink = follow(events, batch_age_s=0.0)
    assert [[e.seq for e in batch] for batch in sink.batches] == [[e["seq"]] for e in events]


def test_an_error_is_stored_at_once() -> None:
    events = trial_events(reps=1, queries_per_rep=4, status="failed")
    sink = follow(events, batch_age_s=3600.0, status="failed")
    ends = [batch[-1].type for batch in sink.batches]
    assert ends == ["error", "done"]
