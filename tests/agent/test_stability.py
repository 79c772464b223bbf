"""The stable start: power trend and temperature span over a window, the time limit."""

from __future__ import annotations

import pytest

from agent import stability
from agent.meters.base import Sample
from agent.protocol import JobSpec, StabilityPolicy
from tasks.errors import JobSpecError
from tests.agent.conftest import job_dict


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += seconds


def _meter(watts, period: float = 0.1):
    """samples(t0, t1) of a meter reading ``watts(t)`` every ``period`` seconds."""

    def samples(t0: float, t1: float) -> list[Sample]:
        first = int(t0 / period) + 1
        last = int(t1 / period)
        return [Sample(i * period, watts(i * period)) for i in range(first, last + 1)]

    return samples


POLICY = StabilityPolicy(max_wait_s=20.0, window_s=2.0, power_tolerance=0.05)


def test_a_board_cooling_down_is_waited_for_until_its_power_flattens() -> None:
    """Power decays from 4 W towards 3 W: stable once the trend is within 5 %."""
    clock = FakeClock()
    settled = stability.settle(
        POLICY,
        samples=_meter(lambda t: 3.0 + 1.0 * 0.5 ** ((t - 100.0) / 0.8)),
        temp_c=lambda: 50.0,
        wait=clock.wait,
        clock=clock,
    )
    assert settled.stable is True
    assert 2.0 < settled.waited_s < 20.0
    assert settled.power_change <= 0.05 and settled.temp_range_c == 0.0
    assert settled.fresh_samples >= 15


def test_a_steady_board_waits_one_window_only() -> None:
    clock = FakeClock()
    settled = stability.settle(
        POLICY, samples=_meter(lambda t: 3.0), temp_c=lambda: None, wait=clock.wait, clock=clock
    )
    assert settled.stable is True and settled.waited_s == pytest.approx(2.0)
    assert settled.temp_range_c is None


def test_a_board_that_never_settles_runs_anyway_with_what_was_observed() -> None:
    """A temperature still climbing 1 C a second: not stable at the time limit."""
    clock = FakeClock()
    settled = stability.settle(
        StabilityPolicy(max_wait_s=5.0, window_s=2.0),
        samples=_meter(lambda t: 3.0),
        temp_c=lambda: 40.0 + (clock.now - 100.0),
        wait=clock.wait,
        clock=clock,
    )
    assert settled.stable is False
    assert settled.waited_s == pytest.approx(5.0)
    assert settled.temp_range_c == pytest.approx(2.0)
    assert "temperature spanned 2.0 C" in settled.observed


def test_nothing_to_observe_or_no_wait_returns_at_once() -> None:
    clock = FakeClock()
    none = stability.settle(POLICY, samples=None, temp_c=lambda: None, wait=clock.wait, clock=clock)
    assert none.stable is None and none.waited_s == 0 and "no meter" in none.observed
    off = stability.settle(
        StabilityPolicy(max_wait_s=0.0),
        samples=_meter(lambda t: 3.0),
        temp_c=lambda: 50.0,
        wait=clock.wait,
        clock=clock,
    )
    assert off.stable is None and off.observed == "not waited for"
    assert clock.now == 100.0


def test_drift_is_relative_to_the_baseline() -> None:
    assert stability.drift(3.0, 3.3) == pytest.approx(0.1)
    assert stability.drift(None, 3.0) is None and stability.drift(3.0, None) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_wait_s", -1),
        ("window_s", 0),
        ("power_tolerance", 1.5),
        ("temp_tolerance_c", 0),
        ("drift_threshold", -0.1),
    ],
)
def test_out_of_range_stability_settings_are_refused_naming_the_field(
    workdir, field: str, value: float
) -> None:
    with pytest.raises(JobSpecError, match=rf"job.json.stability.{field}: must be"):
        JobSpec.from_dict(job_dict(workdir, stability={field: value}))


def test_unknown_stability_settings_are_refused(workdir) -> None:
    with pytest.raises(JobSpecError, match=r"stability: unknown field.*max_wait"):
        JobSpec.from_dict(job_dict(workdir, stability={"max_wait": 5}))
