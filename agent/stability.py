"""A stable start: wait until the idle power and the CPU temperature have settled.

A board that has just loaded a model, or run the meter's lag steps, is warmer and draws
more than it will a minute later; an idle baseline taken then is too high and every net
energy too low. :func:`settle` watches the last ``window_s`` seconds (readings of the
meter's sampler and temperatures read every ``POLL_S``) until

* the median power of the window's second half differs from its first half's by at most
  ``power_tolerance`` of it (a trend, not noise: a noisy meter's medians agree), and
* the temperature spans at most ``temp_tolerance_c``,

or ``max_wait_s`` has passed: then the trial runs anyway and the record says what was
observed. Whatever cannot be observed (no meter, no thermal zone) is not waited for.
After the queries, :func:`drift` compares the idle power measured again with the baseline.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from agent.meters.base import Sample
from agent.protocol import StabilityPolicy

#: seconds between two temperature readings (and stability checks) while settling
POLL_S = 0.5


@dataclass(frozen=True)
class Check:
    """One look at the last window: what was observed and whether it is stable."""

    #: relative change of the median power from the window's first half to its second
    power_change: float | None
    #: the temperature's span over the window (degrees C)
    temp_range_c: float | None
    fresh_samples: int
    power_stable: bool | None
    temp_stable: bool | None

    @property
    def stable(self) -> bool:
        return self.power_stable is not False and self.temp_stable is not False


def _median_w(samples: Sequence[Sample], t0: float, t1: float) -> float | None:
    values = [s.watts for s in samples if s.fresh and s.watts is not None and t0 <= s.t < t1]
    return statistics.median(values) if values else None


def assess(
    samples: Sequence[Sample] | None,
    temps: Sequence[tuple[float, float]] | None,
    t0: float,
    t1: float,
    policy: StabilityPolicy,
) -> Check:
    """Whether power (``samples``; None: no meter) and temperature (``(t, temp_c)``;
    None: no thermal zone) were stable over [t0, t1]."""
    power_change = power_stable = None
    fresh = 0
    if samples is not None:
        half = (t0 + t1) / 2
        first, second = _median_w(samples, t0, half), _median_w(samples, half, t1 + 1e-9)
        fresh = sum(1 for s in samples if s.fresh and s.watts is not None and t0 <= s.t <= t1)
        if first is not None and second is not None and first > 0:
            power_change = abs(second - first) / first
            power_stable = power_change <= policy.power_tolerance
        else:
            power_stable = False  # not enough readings yet to tell
    temp_range = temp_stable = None
    if temps is not None:
        inside = [c for t, c in temps if t0 <= t <= t1]
        if inside:
            temp_range = max(inside) - min(inside)
            temp_stable = temp_range <= policy.temp_tolerance_c
        else:
            temp_stable = False
    return Check(power_change, temp_range, fresh, power_stable, temp_stable)


@dataclass(frozen=True)
class Settled:
    """The outcome of the wait, as the trial's stability record keeps it."""

    #: True: stable; False: never stable within max_wait_s; None: nothing to observe
    stable: bool | None
    waited_s: float
    max_wait_s: float
    power_change: float | None
    temp_range_c: float | None
    fresh_samples: int
    observed: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def settle(
    policy: StabilityPolicy,
    *,
    samples: Callable[[float, float], Sequence[Sample]] | None,
    temp_c: Callable[[], float | None],
    wait: Callable[[float], None],
    clock: Callable[[], float] = time.monotonic,
) -> Settled:
    """Wait until stable or ``max_wait_s``; ``samples(t0, t1)`` reads the meter's samples
    (None: no meter), ``wait(seconds)`` sleeps (and may raise to stop)."""
    t_begin = clock()
    temps: list[tuple[float, float]] | None = [] if temp_c() is not None else None
    if policy.max_wait_s <= 0 or (samples is None and temps is None):
        what = "not waited for" if policy.max_wait_s <= 0 else "no meter and no thermal zone"
        return Settled(None, 0.0, policy.max_wait_s, None, None, 0, what)
    check = None
    while True:
        now = clock()
        if temps is not None:
            reading = temp_c()
            if reading is not None:
                temps.append((now, reading))
        if now - t_begin >= policy.window_s:
            t0 = now - policy.window_s
            check = assess(None if samples is None else samples(t0, now), temps, t0, now, policy)
            if check.stable or now - t_begin >= policy.max_wait_s:
                break
        wait(POLL_S)
    return Settled(
        stable=check.stable,
        waited_s=round(now - t_begin, 2),
        max_wait_s=policy.max_wait_s,
        power_change=None if check.power_change is None else round(check.power_change, 4),
        temp_range_c=None if check.temp_range_c is None else round(check.temp_range_c, 2),
        fresh_samples=check.fresh_samples,
        observed=_observed(check, policy),
    )


def _observed(check: Check, policy: StabilityPolicy) -> str:
    parts = []
    if check.power_stable is not None:
        change = "no readings" if check.power_change is None else f"{check.power_change:.1%}"
        parts.append(
            f"idle power changed {change} within {policy.window_s:g} s "
            f"(tolerance {policy.power_tolerance:.1%}, {check.fresh_samples} fresh samples)"
        )
    if check.temp_stable is not None:
        span = "no readings" if check.temp_range_c is None else f"{check.temp_range_c:.1f} C"
        parts.append(f"temperature spanned {span} (tolerance {policy.temp_tolerance_c:g} C)")
    return "; ".join(parts)


def drift(before_w: float | None, after_w: float | None) -> float | None:
    """Relative change of the idle power from before the queries to after them."""
    if before_w is None or after_w is None or before_w <= 0:
        return None
    return (after_w - before_w) / before_w
