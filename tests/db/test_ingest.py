"""The ingest API: devices, artifacts, runs, trials, events and power samples."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.errors import DatabaseError
from db.schema import (
    Artifact,
    Device,
    EventRecord,
    Message,
    PowerSample,
    Query,
    Run,
    Score,
    Trial,
    Window,
)
from db.store import Store
from tests.db.conftest import make_trial
from tests.db.factories import power_rows, trial_events


def count(store: Store, model: type, trial_id: int | None = None) -> int:
    stmt = select(func.count()).select_from(model)
    if trial_id is not None:
        stmt = stmt.where(model.trial_id == trial_id)
    with store.session() as s:
        return s.scalar(stmt)


def test_upsert_device_updates_in_place(store: Store) -> None:
    first = store.upsert_device("pi4", "pi4.local", "raspberrypi4", "ssh", "um25c")
    again = store.upsert_device("pi4", "10.0.0.4", None, None, None)
    assert first == again
    with store.session() as s:
        device = s.get(Device, first)
        assert (device.host, device.board, device.meter_kind) == (
            "10.0.0.4",
            "raspberrypi4",
            "um25c",
        )


def test_register_artifact_is_idempotent_and_dense_has_ratio_one(store: Store) -> None:
    dense = store.register_artifact({"model": "m", "method": "dense"})
    assert store.register_artifact({"model": "m", "method": "dense"}) == dense
    tt = store.register_artifact(
        {"model": "m", "method": "tt", "compression_ratio": 1.48, "params": {"rank": 6}},
        sha256="b" * 64,
    )
    assert tt != dense and store.register_artifact({"model": "m"}, sha256="b" * 64) == tt
    with store.session() as s:
        assert s.get(Artifact, dense).compression_ratio == 1.0
        assert s.get(Artifact, tt).params == {"rank": 6}
    with pytest.raises(DatabaseError, match="no 'model'"):
        store.register_artifact({"method": "tt"})


def test_create_trial_is_idempotent_for_resume(store: Store) -> None:
    trial = make_trial(store)
    assert make_trial(store) == trial
    assert make_trial(store, task="perplexity") != trial
    with pytest.raises(DatabaseError, match="no device 'nope'"):
        store.create_trial("run-1", "nope", "dense", "generate", None)
    with pytest.raises(DatabaseError, match="no run 'absent'"):
        store.create_trial("absent", "pi5", "dense", "generate", None)


def test_replaying_events_stores_them_once(store: Store) -> None:
    trial = make_trial(store)
    events = trial_events()
    assert store.last_seq(trial) == 0
    assert store.ingest_events(trial, events[:20]) == 20
    # a reconnect replays an overlapping range; a full replay adds nothing
    assert store.ingest_events(trial, events[10:]) == len(events) - 20
    assert store.ingest_events(trial, events) == 0
    assert store.ingest_events(trial, events[:5] + events[:5]) == 0
    assert store.last_seq(trial) == events[-1]["seq"]
    assert count(store, EventRecord, trial) == len(events)
    n_queries = sum(e["type"] == "query" for e in events)
    assert count(store, Query, trial) == n_queries == 24


def test_derived_rows_and_trial_facts(store: Store) -> None:
    trial = make_trial(store)
    events = trial_events(idle_power_w=2.9, status="failed")
    store.ingest_events(trial, events)
    kinds = [e["type"] for e in events]
    assert count(store, Window, trial) == kinds.count("window")
    assert count(store, Score, trial) == kinds.count("score") == 2
    assert count(store, Message, trial) == kinds.count("warning") + kinds.count("error") == 2
    with store.session() as s:
        t = s.get(Trial, trial)
        assert t.idle_power_w == pytest.approx(2.9)
        assert t.status.value == "failed" and "out of memory" in t.error
        assert (t.meter_kind, t.meter_period_s, t.threads) == ("pi5-pmic", 0.1, 4)
        assert t.torch_version == "2.13.0" and t.job_id == "job-0"
        assert t.started_at is not None and t.finished_at is not None
        assert t.duration_s == pytest.approx(events[-1]["duration_s"])
        assert s.get(Device, t.device_id).board == "raspberrypi5"
        assert (t.peak_rss_bytes, t.peak_rss_scope) == (400 * 2**20, "job")
        assert t.decode_s_per_token == pytest.approx(0.018)


def test_a_done_event_without_memory_or_decode_leaves_them_null(store: Store) -> None:
    trial = make_trial(store)
    store.ingest_events(trial, trial_events(peak_rss_bytes=None))
    with store.session() as s:
        t = s.get(Trial, trial)
        assert (t.peak_rss_bytes, t.peak_rss_scope, t.decode_s_per_token) == (None, None, None)


def test_trial_and_run_status(store: Store) -> None:
    trial = make_trial(store)
    store.set_trial_status(trial, "interrupted", error="connection lost")
    store.finish_run("run-1", "partial")
    with store.session() as s:
        assert s.get(Trial, trial).status.value == "interrupted"
        run = s.get(Run, "run-1")
        assert run.status.value == "partial" and run.finished_at is not None
    with pytest.raises(DatabaseError, match="not a TrialStatus"):
        store.set_trial_status(trial, "great")
    with pytest.raises(DatabaseError, match="not a RunStatus"):
        store.finish_run("run-1", "done")
    # resuming the run marks it running again
    store.create_run("run-1", {}, "inventory.yaml")
    with store.session() as s:
        assert s.get(Run, "run-1").status.value == "running"


def test_events_need_the_core_fields(store: Store) -> None:
    trial = make_trial(store)
    with pytest.raises(DatabaseError, match="lacks seq"):
        store.ingest_events(trial, [{"type": "phase", "t": 1.0, "wall": "x"}])


def test_power_samples_bulk_and_resend(store: Store) -> None:
    trial = make_trial(store)
    rows = power_rows(5000)
    assert store.ingest_power_samples(trial, rows[:3000]) == 3000
    # a resend after a resume starts again from the beginning of the file
    assert store.ingest_power_samples(trial, iter(rows)) == 2000
    assert count(store, PowerSample, trial) == 5000
    with store.session() as s:
        fresh = s.scalar(select(func.count()).where(PowerSample.fresh.is_(False)))
        watts = s.scalar(select(func.sum(PowerSample.watts)))
    assert fresh == sum(not r[4] for r in rows)
    assert watts == pytest.approx(sum(r[1] for r in rows))


def test_read_only_store_refuses_ingest(store: Store) -> None:
    from db.errors import ReadOnlyError
    from db.store import open_store

    make_trial(store)
    with open_store(store.url, read_only=True) as ro, pytest.raises(ReadOnlyError):
        ro.upsert_device("x")


def test_resume_state(store: Store) -> None:
    trial = make_trial(store)
    assert store.run_exists("run-1") and not store.run_exists("run-2")
    assert store.trial_state(trial).status == "pending"
    store.start_attempt(trial, "job-7")
    assert store.trial_state(trial).job_id == "job-7"
    store.ingest_events(trial, trial_events()[:10])
    state = store.trial_state(trial)
    # the hello event reports the job the agent really runs
    assert (state.status, state.job_id, state.last_seq) == ("running", "job-0", 10)


def test_artifact_keeps_the_ratio_against_the_source_format(store: Store) -> None:
    manifest = {
        "model": "m",
        "method": "int",
        "compression_ratio": 7.1,
        "compression_ratio_source": 1.89,
        "source_format": {"name": "Q8_0", "bytes": 1000},
        "size_bytes": 4096,
    }
    artifact = store.register_artifact(manifest, sha256="c" * 64)
    with store.session() as s:
        row = s.get(Artifact, artifact)
        assert (row.compression_ratio_source, row.source_format, row.size_bytes) == (
            1.89,
            "Q8_0",
            4096,
        )
