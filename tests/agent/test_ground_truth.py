"""Reported energies against the true power: the real runner, sampler and drivers, a
load-following emulated meter, and the emulator's trace on the same monotonic clock.

The job runs in this process, and the meter follows this process's CPU use (its threads
and children: the model's forward passes, the sampler, a PMIC driver's vcgencmd calls).
The ``alternating`` task changes the load at every query boundary, so misplaced window
edges cannot cancel. Every ``window`` and ``query`` event's energy is compared with the
integral of the true trace over its own [t_start, t_end]; the idle baseline with the true
mean power over the idle window.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.meters.emulate.follow import StepTrace, read_trace
from agent.protocol import Event
from tests.agent.conftest import job_dict
from tests.agent.test_runner import of, run_in_process

IDLE_W = 2.0
BUSY_W = 1.5


def relative_errors(events: list[Event], trace: StepTrace, kind: str) -> dict[str, list[float]]:
    """Relative errors of energy and net energy of every ``kind`` window (or query)."""
    idle = next(w for w in of(events, "window", kind="idle"))
    # the baseline is the median of the readings: its truth is the median of the power
    true_idle = trace.median_w(idle["t_start"], idle["t_end"])
    out: dict[str, list[float]] = {"energy": [], "net": [], "net_abs_j": []}
    items = of(events, "query") if kind == "query" else of(events, "window", kind=kind)
    for item in items:
        t0, t1 = item["t_start"], item["t_end"]
        true = trace.energy_j(t0, t1)
        true_net = true - true_idle * (t1 - t0)
        out["energy"].append((item["energy_j"] - true) / true)
        out["net"].append((item["net_energy_j"] - true_net) / true)
        out["net_abs_j"].append(item["net_energy_j"] - true_net)
    return out


def run_following(
    workdir: Path, tmp_path: Path, kind: str, task: dict[str, Any], **spec: Any
) -> tuple[list[Event], StepTrace]:
    """Run a job behind a meter of ``kind`` that follows this process; returns events, trace.

    The emulator runs in a process of its own (``tslm-fleet meter emulate``), as it would
    in a lab: in this one it would wait for the interpreter lock while the job computes.
    """
    trace_path = tmp_path / "true.trace"
    lag_s = spec.pop("emulated_lag_s", 0.0)
    with serve_meter(
        kind,
        "--follow-pid", str(os.getpid()),
        "--idle-w", str(IDLE_W),
        "--busy-w", str(BUSY_W),
        "--trace", str(trace_path),
        "--root", str(tmp_path / "meter"),
        "--lag", str(lag_s),
    ) as options:  # fmt: skip
        job = job_dict(
            workdir,
            tasks=[{"name": "alternating", "params": task}],
            meter={"kind": kind, **options},
            **spec,
        )
        status, events = run_in_process(workdir, job)
    assert status == "ok", [e.to_dict() for e in of(events, "error")]
    return events, read_trace(trace_path)


@contextlib.contextmanager
def serve_meter(kind: str, *args: str) -> Iterator[dict[str, str]]:
    """``tslm-fleet meter emulate --kind KIND ARGS`` in a subprocess; yields the options."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "meter", "emulate", "--kind", kind, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"meter emulate failed: {proc.communicate()[1]}")
        yield json.loads(line)["options"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def check_idle(events: list[Event], trace: StepTrace, bound: float) -> float:
    idle = next(w for w in of(events, "window", kind="idle"))
    true = trace.median_w(idle["t_start"], idle["t_end"])
    error = (idle["median_power_w"] - true) / true
    assert abs(error) <= bound, (idle.to_dict(), true)
    return error


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "bound"), [("hwmon", 0.02), ("pi5-pmic", 0.02)])
def test_windows_of_one_second_hold_the_bound(
    kind: str, bound: float, workdir: Path, tmp_path: Path
) -> None:
    events, trace = run_following(
        workdir,
        tmp_path,
        kind,
        {"queries": 8, "heavy_s": 0.5, "light_s": 0.5},
        repetitions=1,
        idle_seconds=1.5,
        window={"min_fresh_samples": 3, "min_seconds": 1.0, "lag_steps": 6},
    )
    windows = of(events, "window", kind="queries")
    assert len(windows) >= 3
    errors = relative_errors(events, trace, "queries")
    worst = max(abs(e) for e in errors["energy"])
    assert worst <= bound, errors
    assert max(abs(e) for e in errors["net"]) <= 2 * bound, errors
    check_idle(events, trace, bound)
    (ranged,) = of(events, "phase", phase="ranged")
    assert ranged["lag_problem"] is None and abs(ranged["lag_s"]) < 0.1


@pytest.mark.slow
def test_um_windows_of_five_seconds_hold_the_bound(workdir: Path, tmp_path: Path) -> None:
    events, trace = run_following(
        workdir,
        tmp_path,
        "um25c",
        {"queries": 12, "heavy_s": 1.0, "light_s": 0.7},
        repetitions=1,
        idle_seconds=3.0,
        window={"min_fresh_samples": 8, "min_seconds": 5.0, "lag_steps": 6},
    )
    errors = relative_errors(events, trace, "queries")
    windows = of(events, "window", kind="queries")
    full = [e for w, e in zip(windows, errors["energy"], strict=True) if w["duration_s"] >= 5.0]
    assert full, windows
    assert max(abs(e) for e in full) <= 0.05, errors
    (ranged,) = of(events, "phase", phase="ranged")
    assert ranged["lag_problem"] is None and 0.1 < ranged["lag_s"] < 0.6, ranged.to_dict()
    check_idle(events, trace, 0.05)


@pytest.mark.slow
def test_lag_of_a_ten_hertz_meter_is_measured_and_taken_out(
    workdir: Path, tmp_path: Path, record_property: Any
) -> None:
    """300 ms of lag on a PMIC-style meter: per-query energies of ~1 s queries of
    alternating load are off without the correction and within the bound with it."""
    task = {"queries": 8, "heavy_s": 1.0, "light_s": 1.0}
    window = {"min_fresh_samples": 3, "min_seconds": 0.0}
    common = {"repetitions": 1, "idle_seconds": 1.5, "emulated_lag_s": 0.3}
    events, trace = run_following(
        workdir, tmp_path / "with", "pi5-pmic", task, window={**window, "lag_steps": 6}, **common
    )
    (ranged,) = of(events, "phase", phase="ranged")
    assert ranged["lag_s"] == pytest.approx(0.3, abs=0.05), ranged.to_dict()
    corrected = relative_errors(events, trace, "query")["energy"]
    events, trace = run_following(
        workdir, tmp_path / "without", "pi5-pmic", task, window=window, job_id="job-2", **common
    )
    assert not of(events, "phase", phase="ranged")
    uncorrected = relative_errors(events, trace, "query")["energy"]
    worst_with = max(abs(e) for e in corrected)
    worst_without = max(abs(e) for e in uncorrected)
    record_property("worst_with", worst_with)
    record_property("worst_without", worst_without)
    assert worst_with <= 0.02, corrected
    assert worst_without > 0.02, uncorrected
