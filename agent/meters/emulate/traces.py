"""Scripted power traces: power as a function of time, with exact energy integrals.

A trace is piecewise linear in time (steps are two points at the same time), measured
from an origin on the monotonic clock (system-wide on Linux, so another process can
share it). Text form, for command lines:

    const:2.5                   2.5 W
    steps:0=2.0,3=3.5,6=2.0     2.0 W from 0 s, 3.5 W from 3 s, 2.0 W from 6 s
    ramp:1.0,4.0,10             1.0 W rising linearly to 4.0 W over 10 s, then held
    pulse:2.0,6.0,1.0,0.2       2.0 W with a 6.0 W pulse from 1.0 s lasting 0.2 s
    points:0=1,2=3,2=1,5=4      explicit (time=watts) points
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import Protocol

from tasks.errors import ConfigError

DEFAULT_VOLTS = 5.1


class PowerTrace(Protocol):
    """What an emulator reads: power and exact energy over time, at a fixed voltage."""

    volts: float

    def power_w(self, t: float) -> float: ...

    def energy_j(self, t0: float, t1: float) -> float: ...


@dataclass(frozen=True)
class Trace:
    """Piecewise-linear power over time (seconds since the origin); held flat outside."""

    points: tuple[tuple[float, float], ...]
    volts: float = DEFAULT_VOLTS

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a trace needs at least one point")
        times = [t for t, _ in self.points]
        if times != sorted(times):
            raise ValueError("trace points must be in time order")

    def power_w(self, t: float) -> float:
        """Power at ``t``; at a step the value after the step."""
        times = [p[0] for p in self.points]
        i = bisect.bisect_right(times, t)
        if i == 0:
            return self.points[0][1]
        if i == len(self.points):
            return self.points[-1][1]
        (ta, pa), (tb, pb) = self.points[i - 1], self.points[i]
        if tb == ta:
            return pb
        return pa + (pb - pa) * (t - ta) / (tb - ta)

    def amps(self, t: float) -> float:
        return self.power_w(t) / self.volts

    def energy_j(self, t0: float, t1: float) -> float:
        """Exact integral of the power over [t0, t1]."""
        if t1 < t0:
            raise ValueError("t1 < t0")
        knots = sorted({t0, t1, *(t for t, _ in self.points if t0 < t < t1)})
        total = 0.0
        for a, b in itertools.pairwise(knots):
            # power is linear on (a, b): right limit at a, left limit at b
            total += (b - a) * (self.power_w(a) + self._left_limit(b)) / 2
        return total

    def _left_limit(self, t: float) -> float:
        times = [p[0] for p in self.points]
        i = bisect.bisect_left(times, t)
        if 0 < i < len(self.points) and times[i] == t:
            return self.points[i][1]  # the first point at a step time is the value before it
        return self.power_w(t)


def constant(watts: float, volts: float = DEFAULT_VOLTS) -> Trace:
    return Trace(((0.0, watts),), volts)


def steps(levels: list[tuple[float, float]], volts: float = DEFAULT_VOLTS) -> Trace:
    """``levels``: (start time, watts) pairs; the power jumps at each start time."""
    points: list[tuple[float, float]] = []
    for start, watts in levels:
        if points:
            points.append((start, points[-1][1]))
        points.append((start, watts))
    return Trace(tuple(points), volts)


def ramp(w0: float, w1: float, duration_s: float, volts: float = DEFAULT_VOLTS) -> Trace:
    return Trace(((0.0, w0), (duration_s, w1)), volts)


def pulse(
    base_w: float, peak_w: float, start_s: float, width_s: float, volts: float = DEFAULT_VOLTS
) -> Trace:
    return steps([(0.0, base_w), (start_s, peak_w), (start_s + width_s, base_w)], volts)


def parse_trace(spec: str) -> Trace:
    """Parse the text form described in the module docstring."""
    name, _, args = spec.partition(":")
    try:
        if name == "const":
            return constant(float(args))
        if name == "steps":
            pairs = [item.split("=") for item in args.split(",")]
            return steps([(float(t), float(w)) for t, w in pairs])
        if name == "ramp":
            w0, w1, duration = (float(x) for x in args.split(","))
            return ramp(w0, w1, duration)
        if name == "pulse":
            base, peak, start, width = (float(x) for x in args.split(","))
            return pulse(base, peak, start, width)
        if name == "points":
            pairs = [item.split("=") for item in args.split(",")]
            return Trace(tuple((float(t), float(w)) for t, w in pairs))
    except ValueError as exc:
        raise ConfigError(f"bad trace {spec!r}: {exc}") from exc
    raise ConfigError(
        f"unknown trace kind {name!r} in {spec!r} (const, steps, ramp, pulse, points)"
    )
