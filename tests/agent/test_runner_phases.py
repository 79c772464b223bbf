"""A generate job on the real hwmon driver over a fake sysfs tree: per-phase energy in
the query and window events, the stable start, the idle drift and the provenance."""

from __future__ import annotations

import threading
from pathlib import Path

from agent.meters.bounds import BOUNDS
from tests.agent.conftest import assert_gapless, job_dict
from tests.agent.test_runner import IDLE_W, Echo, FakeIna226, of, run_in_process


def _spec(workdir: Path, sysfs: Path, **overrides):
    return job_dict(
        workdir,
        idle_seconds=0.6,
        tasks=[
            {
                "name": "generate",
                "params": {"num_queries": 12, "max_new_tokens": 20, "chat_template": False},
            }
        ],
        repetitions=1,
        # windows long enough that decode, most of each query, holds enough samples
        window={"min_fresh_samples": 5, "min_seconds": 0.3},
        meter={"kind": "hwmon", "hwmon_name": "ina226", "sysfs_root": str(sysfs)},
        meter_roots=[str(sysfs.parent)],
        **overrides,
    )


def test_generate_reports_per_phase_energy_stability_and_provenance(
    workdir: Path, tmp_path: Path
) -> None:
    meter = FakeIna226(tmp_path / "sysfs")
    spec = _spec(workdir, tmp_path / "sysfs", stability={"max_wait_s": 10, "window_s": 0.5})
    try:
        status, events = run_in_process(workdir, spec)
    finally:
        meter.close()
    assert status == "ok", [e.to_dict() for e in of(events, "error")]
    assert_gapless(events)
    phases = [e["phase"] for e in of(events, "phase")]
    assert phases[phases.index("settling") :] == [
        "settling",
        "settled",
        "idle",
        "running",
        "idle_after",
    ]
    (settled,) = of(events, "phase", phase="settled")
    assert settled["stable"] is True and 0.5 <= settled["waited_s"] < 10

    for q in of(events, "query"):
        assert q["decode_tokens"] == q["output_tokens"] - 1
        # the two phases partition the query: their energies add up to its energy
        assert abs(q["prefill_energy_j"] + q["decode_energy_j"] - q["energy_j"]) < 1e-9
    windows = of(events, "window", kind="queries")
    assert sum(w["queries"] for w in windows) == 12
    for w in windows:
        assert w["decode_tokens"] == 19 * w["queries"]
        assert w["prefill_fresh_samples"] + w["decode_fresh_samples"] <= w["fresh_samples"] + 2
        if not w["decode_under_resolved"]:
            expected = w["decode_energy_j"] / w["decode_tokens"]
            assert abs(w["energy_j_per_decode_token"] - expected) < 1e-12
        else:
            assert w["energy_j_per_decode_token"] is None
    # constant power: energy per decode token is power x decode time / decode tokens
    resolved = [w for w in windows if w["energy_j_per_decode_token"] is not None]
    assert resolved, windows

    hello = events[0]
    prov = hello["provenance"]
    assert prov["meter_boundary"] == "hwmon sensor rail"
    assert prov["meter_error_bound"] == BOUNDS["hwmon"].to_dict()
    assert prov["meter_rate_hz"] > 0 and "kernel" in prov and "cpu_governor" in prov
    done = events[-1]
    assert done["provenance"]["fresh_samples"] > 50
    assert done["provenance"]["meter_lag_s"] == 0.0
    assert done["provenance"]["meter_lag_ranged"] is False
    record = done["stability"]
    assert record["stable"] is True and record["drifted"] is False
    assert abs(record["idle_after_w"] - IDLE_W) < 0.01
    (after,) = of(events, "window", kind="idle_after")
    assert after["fresh_samples"] >= 10


def test_a_board_that_never_settles_runs_anyway_and_a_drift_is_flagged(
    workdir: Path, tmp_path: Path
) -> None:
    meter = FakeIna226(tmp_path / "sysfs")
    stop = threading.Event()

    def ramp() -> None:  # +0.6 W a second, all along
        while not stop.wait(0.05):
            meter.watts += 0.03

    threading.Thread(target=ramp, daemon=True).start()
    spec = _spec(
        workdir,
        tmp_path / "sysfs",
        stability={"max_wait_s": 1.5, "window_s": 1.0, "drift_threshold": 0.05},
    )
    try:
        status, events = run_in_process(workdir, spec, Echo())
    finally:
        stop.set()
        meter.close()
    assert status == "ok", [e.to_dict() for e in of(events, "error")]
    (settled,) = of(events, "phase", phase="settled")
    assert settled["stable"] is False and settled["waited_s"] >= 1.5
    (warning,) = of(events, "warning", code="unstable_start")
    assert (
        "stability.max_wait_s" in warning["message"]
        and "idle power changed" in (warning["message"])
    )
    assert of(events, "query")  # it ran anyway
    record = events[-1]["stability"]
    assert record["stable"] is False and record["drifted"] is True
    assert record["idle_drift"] > 0.05
    assert of(events, "warning", code="idle_drift")
