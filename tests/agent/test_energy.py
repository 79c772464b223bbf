"""Energy integration against the analytic energy of synthetic traces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.energy import integrate, median_power
from agent.meters.base import Sample
from agent.meters.emulate.traces import Trace, constant, pulse, ramp, steps


def sampled(
    trace: Trace, period_s: float, t_end: float, t_start: float = 0.0, phase_s: float = 0.0
) -> list[Sample]:
    n = int((t_end - t_start - phase_s) / period_s) + 1
    times = [t_start + phase_s + i * period_s for i in range(n)]
    return [Sample(t=t, watts=trace.power_w(t), volts=trace.volts) for t in times]


TRACES = {
    "steps": steps([(0, 2.0), (2.3, 4.5), (5.1, 1.2), (7.7, 3.0)]),
    "ramp": ramp(1.0, 6.0, 10.0),
    "ramp_and_step": Trace(((0, 1.0), (4.0, 5.0), (4.0, 2.0), (10.0, 3.0))),
}


#: windows a sample period resolves: each step costs at most (step W) x period / 2 joules
RESOLVED = {0.01: [(0.5, 9.5), (1.05, 8.93), (2.0, 3.0)], 0.1: [(0.5, 9.5), (1.05, 8.93)]}


@pytest.mark.parametrize("name", sorted(TRACES))
@pytest.mark.parametrize("period_s", sorted(RESOLVED))
def test_resolved_traces_are_within_half_a_percent(name: str, period_s: float) -> None:
    trace = TRACES[name]
    samples = sampled(trace, period_s, 11.0, phase_s=period_s / 3)
    for t0, t1 in RESOLVED[period_s]:
        window = integrate(samples, t0, t1)
        exact = trace.energy_j(t0, t1)
        assert window.energy_j == pytest.approx(exact, rel=0.005)
        assert not window.under_resolved and not window.gap
        assert window.duration_s == pytest.approx(t1 - t0)
        assert window.mean_power_w == pytest.approx(exact / (t1 - t0), rel=0.005)


def test_ramps_are_exact_with_interpolated_edges() -> None:
    trace = ramp(1.0, 6.0, 10.0)
    samples = sampled(trace, 0.5, 10.0)
    window = integrate(samples, 1.13, 7.77)
    assert window.energy_j == pytest.approx(trace.energy_j(1.13, 7.77), rel=1e-12)
    assert window.extrapolated_s == 0.0


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(0.0, 5.0),
    width=st.floats(0.001, 0.4),
    phase=st.floats(0.0, 0.499),
    peak=st.floats(3.0, 20.0),
)
def test_pulses_shorter_than_the_period_are_flagged(
    start: float, width: float, phase: float, peak: float
) -> None:
    trace = pulse(2.0, peak, start + 1.0, width)
    samples = sampled(trace, 0.5, 10.0, phase_s=phase)
    window = integrate(samples, start + 1.0, start + 1.0 + width)
    assert window.under_resolved
    assert window.fresh_samples < 2


def test_repeats_do_not_count_and_do_not_enter_the_integral() -> None:
    samples = [
        Sample(0.0, 2.0),
        Sample(0.1, 2.0, fresh=False),
        Sample(0.5, 4.0),
        Sample(0.6, 99.0, fresh=False),
        Sample(1.0, 2.0),
    ]
    window = integrate(samples, 0.0, 1.0)
    assert window.energy_j == pytest.approx(3.0)
    assert (window.samples, window.fresh_samples) == (5, 3)
    assert window.median_power_w == 2.0


def test_no_samples_means_no_energy() -> None:
    window = integrate([], 0.0, 1.0)
    assert window.energy_j is None and window.mean_power_w is None
    assert window.under_resolved and window.fresh_samples == 0
    only_before = integrate([Sample(-1.0, 3.0)], 0.0, 1.0)
    assert only_before.energy_j is None


def test_window_between_two_samples_is_interpolated_and_flagged() -> None:
    samples = [Sample(0.0, 2.0), Sample(1.0, 4.0)]
    window = integrate(samples, 0.25, 0.75)
    assert window.energy_j == pytest.approx(0.5 * 3.0)
    assert window.under_resolved and window.fresh_samples == 0


def test_edges_without_outside_samples_are_held_and_reported() -> None:
    samples = [Sample(0.2, 2.0), Sample(0.8, 2.0)]
    window = integrate(samples, 0.0, 1.0)
    assert window.energy_j == pytest.approx(2.0)
    assert window.extrapolated_s == pytest.approx(0.4)


def test_gaps_mark_overlapping_windows_only() -> None:
    trace = constant(2.0)
    samples = sampled(trace, 0.1, 10.0)
    gaps = [(3.0, 4.0), (9.0, None)]
    assert integrate(samples, 3.5, 5.0, gaps=gaps).gap
    assert integrate(samples, 8.0, 9.5, gaps=gaps).gap  # an open gap
    clean = integrate(samples, 4.5, 8.5, gaps=gaps)
    assert not clean.gap and not clean.under_resolved
    assert integrate(samples, 3.5, 5.0, gaps=gaps).under_resolved


def test_min_fresh_samples_threshold() -> None:
    samples = sampled(constant(1.0), 0.5, 10.0)
    assert not integrate(samples, 1.0, 3.0, min_fresh_samples=5).under_resolved
    assert integrate(samples, 1.0, 3.0, min_fresh_samples=6).under_resolved


def test_median_power_for_the_idle_baseline() -> None:
    samples = [
        Sample(0.0, 1.0),
        Sample(1.0, 5.0),
        Sample(2.0, 2.0),
        Sample(3.0, 2.5),
        Sample(4.0, 50.0, fresh=False),
        Sample(5.0, None),
    ]
    assert median_power(samples, 0.0, 3.0) == pytest.approx(2.25)
    assert median_power(samples, 3.5, 10.0) is None


def test_reversed_window_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        integrate([], 2.0, 1.0)
