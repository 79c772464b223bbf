"""Lag ranging on synthetic readings: the fit finds the delay, and refuses what it cannot."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agent import lag
from agent.meters.base import Sample
from agent.meters.emulate.follow import StepTrace
from agent.meters.emulate.serve import start_emulation
from agent.protocol import JobSpec
from tasks.errors import JobSpecError
from tests.agent.conftest import job_dict
from tests.agent.test_runner import of, run_in_process


def square_wave(
    lengths: list[tuple[float, float]], idle_w: float, busy_w: float
) -> tuple[StepTrace, list[tuple[float, float]]]:
    t = 100.0
    trace = StepTrace(t - 10.0, idle_w)
    intervals = []
    for busy_s, idle_s in lengths:
        trace.append(t, idle_w)
        trace.append(t + busy_s, busy_w)
        intervals.append((t, t + busy_s))
        trace.append(t + busy_s + idle_s, idle_w)
        t += busy_s + idle_s
    return trace, intervals


def test_instantaneous_ten_hertz_meter_with_300_ms_of_lag() -> None:
    lengths = lag.step_lengths(6, 0.1)
    trace, intervals = square_wave(lengths, 2.0, 3.5)
    rng = random.Random(1)
    samples, t = [], 99.5
    while t < intervals[-1][1] + 1.5:
        watts = trace.power_w(t - 0.3) + rng.gauss(0, 0.05)
        samples.append(Sample(t=t, watts=watts))
        t += 0.1 + rng.uniform(-0.01, 0.01)
    found = lag.estimate_lag(samples, intervals, meter_period_s=0.1, max_lag_s=2.0)
    assert found.problem is None
    assert found.lag_s == pytest.approx(0.3, abs=0.02)
    assert found.rise_w == pytest.approx(1.5, rel=0.1), found


def test_um_meter_averaging_half_seconds_lags_by_about_a_quarter_second() -> None:
    """A reading stamped at its request shows the mean of the half second before the
    meter's last refresh; polled just after each refresh, that is 0.25 s late."""
    lengths = lag.step_lengths(6, 0.5)
    trace, intervals = square_wave(lengths, 2.0, 3.5)
    samples = []
    k = int(99.0 / 0.5)
    while k * 0.5 < intervals[-1][1] + 2:
        t_refresh = k * 0.5
        samples.append(
            Sample(t=t_refresh + 0.03, watts=trace.energy_j(t_refresh - 0.5, t_refresh) / 0.5)
        )
        k += 1
    found = lag.estimate_lag(samples, intervals, meter_period_s=0.5, max_lag_s=2.0)
    assert found.problem is None
    assert found.lag_s == pytest.approx(0.28, abs=0.06)


def test_a_meter_that_does_not_follow_the_load_is_refused() -> None:
    lengths = lag.step_lengths(6, 0.1)
    _, intervals = square_wave(lengths, 2.0, 3.5)
    rng = random.Random(2)
    samples = [Sample(t=99.5 + i * 0.1, watts=2.0 + rng.gauss(0, 0.05)) for i in range(120)]
    found = lag.estimate_lag(samples, intervals, meter_period_s=0.1, max_lag_s=2.0)
    assert found.lag_s is None and "do not rise clearly" in (found.problem or "")
    few = lag.estimate_lag(samples[:3], intervals, meter_period_s=0.1, max_lag_s=2.0)
    assert few.lag_s is None and "3 fresh readings" in (few.problem or "")


def test_a_lag_beyond_the_limit_is_refused() -> None:
    lengths = lag.step_lengths(6, 0.1)
    trace, intervals = square_wave(lengths, 2.0, 3.5)
    samples = [
        Sample(t=99.0 + i * 0.1, watts=trace.power_w(99.0 + i * 0.1 - 0.8)) for i in range(150)
    ]
    found = lag.estimate_lag(samples, intervals, meter_period_s=0.1, max_lag_s=0.5)
    assert found.lag_s is None and "exceeds the limit of 0.5 s" in (found.problem or "")


def test_window_policy_takes_lag_steps_and_refuses_bad_ones(workdir: Path) -> None:
    spec = JobSpec.from_dict(
        job_dict(workdir, window={"min_fresh_samples": 3, "lag_steps": 4, "max_lag_s": 1.0})
    )
    assert spec.window.lag_steps == 4 and spec.window.max_lag_s == 1.0
    assert JobSpec.from_dict(spec.to_dict()).window == spec.window
    with pytest.raises(JobSpecError, match="lag_steps"):
        JobSpec.from_dict(job_dict(workdir, window={"lag_steps": -1}))


def test_a_meter_whose_lag_cannot_be_found_warns_and_flags(workdir: Path, tmp_path: Path) -> None:
    """A constant meter shows no load step: a warning, no shift, every energy flagged."""
    with start_emulation("hwmon", watts=3.0, root=tmp_path / "hw") as emu:
        spec = job_dict(
            workdir,
            meter={"kind": "hwmon", **emu.options},
            repetitions=1,
            window={"min_fresh_samples": 3, "lag_steps": 3},
        )
        status, events = run_in_process(workdir, spec)
    assert status == "ok"
    (warning,) = of(events, "warning", code="meter_lag")
    assert "could not be established" in warning["message"]
    (ranged,) = of(events, "phase", phase="ranged")
    assert ranged["lag_s"] is None and ranged["lag_problem"]
    for item in of(events, "query") + of(events, "window", kind="queries"):
        assert item["under_resolved"] is True and item["meter_lag_s"] == 0.0
        assert item["energy_j"] is not None
