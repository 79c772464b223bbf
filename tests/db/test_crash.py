"""A writer killed with SIGKILL in the middle of a batch leaves a consistent database
holding only whole batches."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from db.schema import EventRecord, PowerSample, Query
from db.store import open_store
from tests.db.conftest import make_trial

ROOT = Path(__file__).resolve().parents[2]
SAMPLES_PER_BATCH = 20_000

WRITER = f"""
import sys
from db.store import open_store
from tests.db.factories import power_rows, trial_events

url, trial = sys.argv[1], int(sys.argv[2])
store = open_store(url)
seq, t0 = 1, 1000.0
while True:
    batch = trial_events(seq_start=seq, reps=10, queries_per_rep=40, seed=seq)
    store.ingest_events(trial, batch)
    store.ingest_power_samples(trial, power_rows({SAMPLES_PER_BATCH}, t0=t0))
    seq, t0 = seq + len(batch), t0 + 1000.0
    print(len(batch), flush=True)
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_mid_batch_keeps_whole_batches(db_url: str, seed: int) -> None:
    with open_store(db_url) as store:
        trial = make_trial(store)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, db_url, str(trial)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        batch_size = int(proc.stdout.readline())
        assert int(proc.stdout.readline()) == batch_size
        time.sleep(random.Random(seed).uniform(0.0, 0.3))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with open_store(db_url) as store, store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
        events = conn.scalar(select(func.count()).select_from(EventRecord))
        query_events = conn.scalar(select(func.count()).where(EventRecord.type == "query"))
        queries = conn.scalar(select(func.count()).select_from(Query))
        samples = conn.scalar(select(func.count()).select_from(PowerSample))
        max_seq = conn.scalar(select(func.max(EventRecord.seq)))
        gaps = conn.execute(
            text(
                "SELECT COUNT(*) FROM events e WHERE e.seq > 1 AND NOT "
                "EXISTS (SELECT 1 FROM events p WHERE p.trial_id = "
                "e.trial_id AND p.seq = e.seq - 1)"
            )
        ).scalar()
    assert events >= 2 * batch_size and events % batch_size == 0
    assert max_seq == events and gaps == 0
    assert queries == query_events
    assert samples % SAMPLES_PER_BATCH == 0
    assert samples // SAMPLES_PER_BATCH in (events // batch_size, events // batch_size - 1)
    # the interrupted trial resumes where the database stopped
    with open_store(db_url) as store:
        assert store.last_seq(trial) == events
