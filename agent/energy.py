"""Energy over a time window from power samples: pure functions, no threads, no meters.

The integral is the trapezoid rule over the fresh samples' watts. At each window edge
the power is interpolated linearly between the nearest fresh samples on either side;
when there is no sample beyond an edge, the nearest value inside is held flat to the
edge and the held time is reported as ``extrapolated_s``. Repeated readings of slow
meters carry no new information and are left out of the integral.
"""

from __future__ import annotations

import itertools
import statistics
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.meters.base import Sample

#: a window with fewer fresh samples than this is flagged under-resolved
MIN_FRESH_SAMPLES = 2


@dataclass(frozen=True)
class WindowEnergy:
    """Energy and power statistics of one [t0, t1] window.

    ``energy_j`` is None when there is no meter or no usable sample. ``under_resolved``
    flags windows too short for the meter (fewer than ``min_fresh_samples`` fresh
    samples inside) or touched by a gap in the samples (``gap``).
    """

    energy_j: float | None
    duration_s: float
    samples: int
    fresh_samples: int
    mean_power_w: float | None
    median_power_w: float | None
    under_resolved: bool
    gap: bool
    #: seconds of the window covered by holding an edge value flat (no sample beyond it)
    extrapolated_s: float = 0.0


def _usable(samples: Iterable[Sample]) -> list[Sample]:
    return [s for s in samples if s.fresh and s.watts is not None]


def _interpolate(a: Sample, b: Sample, t: float) -> float:
    assert a.watts is not None and b.watts is not None
    if b.t == a.t:
        return (a.watts + b.watts) / 2
    return a.watts + (b.watts - a.watts) * (t - a.t) / (b.t - a.t)


def median_power(samples: Iterable[Sample], t0: float, t1: float) -> float | None:
    """Median of the fresh samples' watts with t0 <= t <= t1 (the idle baseline)."""
    values = [s.watts for s in _usable(samples) if t0 <= s.t <= t1]
    return statistics.median(values) if values else None


def integrate(
    samples: Sequence[Sample],
    t0: float,
    t1: float,
    *,
    gaps: Iterable[tuple[float, float | None]] = (),
    min_fresh_samples: int = MIN_FRESH_SAMPLES,
) -> WindowEnergy:
    """Energy in joules over [t0, t1] from ``samples`` sorted by time.

    Pass the samples just outside the window too: they are used to interpolate the power
    at the edges. ``gaps`` are intervals (end None: still open) in which the meter gave
    no data; a gap overlapping the window marks it.
    """
    if t1 < t0:
        raise ValueError(f"window ends before it starts: t0={t0}, t1={t1}")
    duration = t1 - t0
    in_window = [s for s in samples if t0 <= s.t <= t1]
    fresh = _usable(samples)
    times = [s.t for s in fresh]
    lo = bisect_left(times, t0)
    hi = bisect_right(times, t1)
    inside = fresh[lo:hi]
    before = fresh[lo - 1] if lo > 0 else None
    after = fresh[hi] if hi < len(fresh) else None
    gap = any(start < t1 and (end is None or end > t0) for start, end in gaps)
    under = len(inside) < min_fresh_samples or gap
    median = statistics.median(s.watts for s in inside) if inside else None  # type: ignore[misc]

    energy: float | None = None
    extrapolated = 0.0
    if inside or (before is not None and after is not None):
        points: list[tuple[float, float]] = []
        first = inside[0] if inside else after
        last = inside[-1] if inside else before
        assert first is not None and last is not None
        if before is not None:
            points.append((t0, _interpolate(before, first, t0)))
        else:
            points.append((t0, first.watts))  # type: ignore[arg-type]
            extrapolated += first.t - t0
        points.extend((s.t, s.watts) for s in inside)  # type: ignore[misc]
        if after is not None:
            points.append((t1, _interpolate(last, after, t1)))
        else:
            points.append((t1, last.watts))  # type: ignore[arg-type]
            extrapolated += t1 - last.t
        energy = sum((tb - ta) * (pa + pb) / 2 for (ta, pa), (tb, pb) in itertools.pairwise(points))
    mean = (
        energy / duration
        if energy is not None and duration > 0
        else (median if duration == 0 else None)
    )
    return WindowEnergy(
        energy_j=energy,
        duration_s=duration,
        samples=len(in_window),
        fresh_samples=len(inside),
        mean_power_w=mean,
        median_power_w=median,
        under_resolved=under,
        gap=gap,
        extrapolated_s=max(extrapolated, 0.0),
    )
