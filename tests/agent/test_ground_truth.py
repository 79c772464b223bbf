"""Reported energies against the true power: the real runner, sampler and drivers, a
load-following emulated meter, and the emulator's trace on the same monotonic clock.

The job runs in this process; the meter, served by ``tslm-fleet meter emulate`` in a
process of its own, follows this process's CPU use (its threads and children: the
model's forward passes, the sampler, a PMIC driver's vcgencmd calls). The
``alternating`` task changes the load at every query boundary, so misplaced window edges
cannot cancel. Every window's energy and net energy is compared with the integral of the
true trace over its own [t_start, t_end], and the idle baseline with the true baseline,
within the family's bound of :data:`testbed.truth.BOUNDS`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent.meters.emulate.fnirsi import FakeFnirsi
from agent.meters.emulate.follow import CpuFollower, StepTrace, read_trace
from agent.protocol import Event
from testbed import truth
from tests.agent.conftest import job_dict
from tests.agent.test_runner import of, run_in_process

IDLE_W = 2.0
BUSY_W = 1.5
THREADS = 2  # the heavy queries take both cores, as on a board

pytestmark = pytest.mark.slow


def run_following(
    workdir: Path, tmp_path: Path, kind: str, task: dict[str, Any], **spec: Any
) -> tuple[list[Event], StepTrace]:
    """Run a job behind a meter of ``kind`` that follows this process; returns events, trace.

    The emulator runs in a process of its own, as in a lab: in this one it would wait for
    the interpreter lock while the job computes.
    """
    trace_path = tmp_path / "true.trace"
    lag_s = spec.pop("emulated_lag_s", 0.0)
    with truth.serve_meter(
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
            threads=THREADS,
            meter={"kind": kind, **options},
            **spec,
        )
        status, events = run_in_process(workdir, job)
    assert status == "ok", [e.to_dict() for e in of(events, "error")]
    return events, read_trace(trace_path)


def check_against_truth(events: list[Event], trace: StepTrace, kind: str) -> None:
    bound = truth.BOUNDS[kind]
    idle = next(w.data for w in of(events, "window", kind="idle"))
    windows = [w.data for w in of(events, "window", kind="queries")]
    full = [e for e in truth.errors(trace, windows, idle) if e.duration_s >= bound.window_s]
    assert full, windows
    idle_error = truth.idle_error(trace, idle, idle["median_power_w"])
    print(
        kind,
        "energy",
        truth.summary([e.energy for e in full]),
        "net",
        truth.summary([e.net for e in full if e.net is not None]),
        "idle",
        idle_error,
    )
    for error in full:
        assert abs(error.energy) <= bound.energy, (error, error.energy)
        assert error.net is not None and abs(error.net) <= bound.net, (error, error.net)
    assert abs(idle_error) <= bound.idle, (idle, idle_error)


@pytest.mark.parametrize("kind", ["hwmon", "pi5-pmic"])
def test_one_second_windows_hold_the_bound(kind: str, workdir: Path, tmp_path: Path) -> None:
    events, trace = run_following(
        workdir,
        tmp_path,
        kind,
        {"queries": 8, "heavy_s": 0.5, "light_s": 0.5},
        repetitions=1,
        idle_seconds=1.5,
        window={"min_fresh_samples": 3, "min_seconds": 1.0, "lag_steps": 10},
    )
    (ranged,) = of(events, "phase", phase="ranged")
    # a few ms either way: the PMIC sample is stamped mid-call, the rails read near its end
    assert ranged["lag_problem"] is None and -0.05 <= ranged["lag_s"] < 0.15, ranged.to_dict()
    check_against_truth(events, trace, kind)


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
    (ranged,) = of(events, "phase", phase="ranged")
    # the reading is the mean of the half second before the refresh: about 0.25 s late
    assert ranged["lag_problem"] is None and 0.1 < ranged["lag_s"] < 0.6, ranged.to_dict()
    check_against_truth(events, trace, "um25c")


def test_lag_of_a_ten_hertz_meter_is_measured_and_taken_out(
    workdir: Path, tmp_path: Path, record_property: Any
) -> None:
    """300 ms of lag on a PMIC-style meter, 1 s queries of alternating load: with the
    lag found by ranging and taken out, every query's energy holds the PMIC's bound;
    without it they do not (heavy queries read low, the light ones after them high)."""
    bound = truth.BOUNDS["pi5-pmic"]
    task = {"queries": 8, "heavy_s": 1.0, "light_s": 1.0}
    window = {"min_fresh_samples": 3, "min_seconds": 0.0}
    common = {"repetitions": 1, "idle_seconds": 1.5, "emulated_lag_s": 0.3}
    events, trace = run_following(
        workdir, tmp_path / "with", "pi5-pmic", task, window={**window, "lag_steps": 10}, **common
    )
    (ranged,) = of(events, "phase", phase="ranged")
    assert ranged["lag_problem"] is None, ranged.to_dict()
    # 0.3 s injected, plus the follower period (20 ms) and the call of vcgencmd
    assert 0.28 <= ranged["lag_s"] <= 0.36, ranged.to_dict()
    idle = next(w.data for w in of(events, "window", kind="idle"))
    corrected = [e.energy for e in truth.errors(trace, [q.data for q in of(events, "query")], idle)]
    events, trace = run_following(
        workdir, tmp_path / "without", "pi5-pmic", task, window=window, job_id="job-2", **common
    )
    assert not of(events, "phase", phase="ranged")
    idle = next(w.data for w in of(events, "window", kind="idle"))
    plain = [e.energy for e in truth.errors(trace, [q.data for q in of(events, "query")], idle)]
    figures = {
        "lag_s": ranged["lag_s"],
        "with": truth.summary(corrected),
        "without": truth.summary(plain),
    }
    for name, value in figures.items():
        record_property(name, value)
    print(figures)
    assert len(corrected) == len(plain) == 8
    # with the correction: the bound holds but for the odd query (about one in 24 of the
    # benchmark's falls outside it: the lagged view of the PMIC samples the power twice)
    assert sum(abs(e) <= bound.energy for e in corrected) >= 7, figures
    # and the typical corrected query is well inside it, far from the uncorrected ones
    assert figures["with"]["median"] <= 0.75 * bound.energy, figures
    assert figures["without"]["median"] >= 2 * figures["with"]["median"], figures
    # without the correction the bound does not hold: 0.3 s of the neighbour's load moves
    # into each 1 s query, the heavy ones read low and the light ones high
    # (how far depends on the load step: a heavy query that gets little of a busy
    # machine's CPU moves less energy across its edges)
    assert figures["without"]["worst"] > bound.energy, figures

    def light_minus_heavy(errs: list[float]) -> float:
        return sum(errs[1::2]) / 4 - sum(errs[0::2]) / 4

    assert light_minus_heavy(plain) > 2 * abs(light_minus_heavy(corrected)), (corrected, plain)


def test_fnirsi_through_its_fake_endpoints_holds_the_bound(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FNIRSI tester has no USB device to serve on this kernel: the real driver reads
    fake endpoints whose packets carry the true power of a follower of this process (in
    this process: the packets are made when the driver asks for them)."""
    import agent.meters

    follower = CpuFollower(
        idle_w=IDLE_W, busy_w=BUSY_W, pid=os.getpid(), exclude_self=False,
        trace_path=tmp_path / "true.trace",
    )  # fmt: skip
    create_meter = agent.meters.create_meter
    with follower:
        device = FakeFnirsi("fnb58", follower.trace, t0=0.0)

        def with_endpoints(kind: str, **options: Any) -> Any:
            return create_meter(kind, endpoints=device.endpoints, **options)

        monkeypatch.setattr(agent.meters, "create_meter", with_endpoints)
        job = job_dict(
            workdir,
            tasks=[
                {"name": "alternating", "params": {"queries": 8, "heavy_s": 0.5, "light_s": 0.5}}
            ],
            threads=THREADS,
            meter={"kind": "fnb58"},
            repetitions=1,
            idle_seconds=1.5,
            window={"min_fresh_samples": 3, "min_seconds": 1.0, "lag_steps": 6},
        )
        status, events = run_in_process(workdir, job)
    assert status == "ok", [e.to_dict() for e in of(events, "error")]
    assert device.packets_sent > 50 and device.bad_requests == 0
    (ranged,) = of(events, "phase", phase="ranged")
    assert ranged["lag_problem"] is None and -0.05 <= ranged["lag_s"] < 0.15, ranged.to_dict()
    check_against_truth(events, read_trace(tmp_path / "true.trace"), "fnb58")


def test_a_lag_beyond_the_limit_warns_and_flags_the_trial(workdir: Path, tmp_path: Path) -> None:
    """0.6 s of lag against a limit of 0.3 s: a warning, no shift, every energy flagged."""
    events, _ = run_following(
        workdir,
        tmp_path,
        "hwmon",
        {"queries": 2, "heavy_s": 0.5, "light_s": 0.5},
        repetitions=1,
        idle_seconds=0.5,
        emulated_lag_s=0.6,
        window={"min_fresh_samples": 3, "lag_steps": 6, "max_lag_s": 0.3},
    )
    (ranged,) = of(events, "phase", phase="ranged")
    assert ranged["lag_s"] is None and "exceeds the limit of 0.3 s" in ranged["lag_problem"]
    (warning,) = of(events, "warning", code="meter_lag")
    assert "could not be established" in warning["message"]
    measured = of(events, "query") + of(events, "window", kind="queries")
    assert measured and all(e["under_resolved"] and e["meter_lag_s"] == 0.0 for e in measured)
