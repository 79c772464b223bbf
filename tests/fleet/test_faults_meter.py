"""Fault matrix, meter half: a UM25C that goes silent, truncates frames or corrupts them.

The emulator shows a constant 2.5 W, so any energy the run reports can be checked
exactly: a window or query either carries 2.5 W x its duration, or says it could not
measure (null energy, under-resolved flag, a gap warning). Queries always complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fleet.harness import (
    assert_completed,
    db_rows,
    fault_run,
    spawn_cli,
    trials,
    wait_for_phase,
)

pytestmark = [pytest.mark.fleet]

WATTS = 2.5
QUERIES = 60


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("fault", "rate", "mid_run"),
    [
        ("silent", 1.0, True),  # the meter stops answering while queries run
        ("truncated", 0.3, False),  # 30 % of the frames cut short
        ("bad_end", 0.3, False),  # 30 % of the frames with corrupted end bytes
    ],
)
@pytest.mark.fault(
    "meter {fault} ({rate:.0%} of frames)",
    expected="warnings/flags, no wrong numbers, queries complete",
)
def test_meter_faults_never_produce_wrong_numbers(
    fault: str,
    rate: float,
    mid_run: bool,
    fleet_factory,
    um25c,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    fleet = fleet_factory(1, meters=[{"kind": "um25c", "port": um25c.port}])
    device = fleet["pi4"]
    args, db = fault_run(
        fleet,
        "pi4",
        tiny_model,
        tmp_path,
        tasks=(("generate", {"num_queries": QUERIES, "max_new_tokens": 16}),),
    )
    if not mid_run:
        um25c.set_fault(fault, rate)
    spawned = spawn_cli(*args, cwd=tmp_path)
    try:
        if mid_run:
            # the idle baseline has been measured; every query runs against a mute meter
            wait_for_phase(device, "running", spawned=spawned)
            um25c.set_fault(fault, rate)
        code = spawned.wait(400)
    finally:
        spawned.kill()
        um25c.set_fault(None)
    out = spawned.output
    run_id, _ = assert_completed(fleet, db, code, out, queries=QUERIES)
    (trial,) = trials(db, run_id)

    windows = db_rows(
        db,
        "SELECT kind, duration_s, energy_j, mean_power_w, samples, "
        "fresh_samples, under_resolved FROM windows WHERE trial_id = :t",
        t=trial["id"],
    )
    for w in windows:
        if w["energy_j"] is not None:
            assert w["mean_power_w"] == pytest.approx(WATTS, rel=0.05), w
            assert w["energy_j"] == pytest.approx(WATTS * w["duration_s"], rel=0.05), w
        assert w["under_resolved"] or w["fresh_samples"] >= 10, w
    queries = db_rows(
        db,
        "SELECT latency_s, energy_j, t_start, t_end FROM queries WHERE trial_id = :t",
        t=trial["id"],
    )
    for q in queries:
        if q["energy_j"] is not None:
            assert q["energy_j"] == pytest.approx(WATTS * (q["t_end"] - q["t_start"]), rel=0.05), q
    warnings = db_rows(
        db, "SELECT data FROM events WHERE trial_id = :t AND type = 'warning'", t=trial["id"]
    )
    flagged = [w for w in windows if w["under_resolved"] or w["energy_j"] is None]
    meter_warnings = [w for w in warnings if "meter" in str(w["data"])]
    # the damage is reported, not hidden: gap warnings or flagged windows
    assert meter_warnings or flagged, (warnings, windows)
    if fault == "silent":
        data = [
            w["data"] if isinstance(w["data"], dict) else json.loads(w["data"]) for w in warnings
        ]
        codes = {d.get("code") for d in data}
        assert codes & {"meter_stale", "meter_warning"}, (
            "a meter that stopped answering must be reported",
            warnings,
        )
        assert all(
            w["under_resolved"] or w["energy_j"] is None for w in windows if w["kind"] == "queries"
        ), windows
