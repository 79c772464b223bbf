"""Meter lag: measured from known load steps before a trial, then taken out of the windows.

A meter's reading at time t shows the power of some time before t: a UM meter shows the
mean of the half second before its last refresh, a sensor behind a filter lags by its
time constant, a reading travels before it is stamped. Integrated as if it were the
power at t, such a reading moves energy across query boundaries.

Ranging (as MLPerf's power runs do): the agent alternates busy and idle levels of
known start and end times, ``steps`` times, with lengths that differ from step to step
so that the edges fall at every phase of a slow meter's refresh (one step cannot
resolve 300 ms on a 2 Hz meter; many steps at different phases can). For each candidate
lag L and averaging width W, a reading at t is predicted as a + b x (busy fraction of
[t - L - W/2, t - L + W/2]); the (L, W) with the least squared error is the meter's.
Windows are then integrated over [t0 + L, t1 + L] of the meter's clock.

The fit is refused (no shift; a warning and a flagged trial instead) when the steps do
not show in the readings (too few samples, no rise under load, a poor fit) or when L
exceeds the limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.meters.base import Sample

#: the lag grid (seconds): from a little early (a stamp after the reading) to the limit
LAG_STEP_S = 0.002
COARSE_STEP_S = 0.02
MIN_LAG_S = -0.1
#: fewer fresh samples than this in the ranging cannot place the edges
MIN_SAMPLES = 8
#: the fitted rise under load must be this many standard errors above zero
MIN_T = 4.0


@dataclass(frozen=True)
class LagEstimate:
    """The lag found by ranging; ``lag_s`` is None when it could not be established."""

    lag_s: float | None
    width_s: float | None
    r2: float | None
    rise_w: float | None
    samples: int
    steps: int
    #: why the lag is not used (None when it is)
    problem: str | None = None

    def to_event(self) -> dict[str, object]:
        return {
            "lag_s": None if self.lag_s is None else round(self.lag_s, 4),
            "lag_width_s": None if self.width_s is None else round(self.width_s, 4),
            "lag_r2": None if self.r2 is None else round(self.r2, 4),
            "lag_rise_w": None if self.rise_w is None else round(self.rise_w, 4),
            "lag_samples": self.samples,
            "lag_steps": self.steps,
            "lag_problem": self.problem,
        }


def step_lengths(steps: int, meter_period_s: float) -> list[tuple[float, float]]:
    """(busy, idle) seconds of each step: a few meter periods, shifted by a golden fraction.

    The fractional shifts spread the edges over the meter's refresh phase.
    """
    base = max(0.4, 3.0 * meter_period_s)
    out = []
    for i in range(steps):
        # lengths differ by up to 60 % from step to step, so that the levels are not
        # periodic (a periodic square wave matches itself shifted by a period)
        busy = base * (1 + 0.6 * ((i * 0.618034) % 1.0)) + ((i * 0.618034) % 1.0) * meter_period_s
        idle = base * (1 + 0.6 * ((i * 0.381966 + 0.5) % 1.0))
        out.append((busy, idle))
    return out


def run_steps(
    lengths: Sequence[tuple[float, float]],
    busy: Callable[[float], None],
    stop: Callable[[], bool] = lambda: False,
) -> list[tuple[float, float]]:
    """Run the busy/idle steps; returns each busy interval (start, end) on the monotonic clock."""
    intervals: list[tuple[float, float]] = []
    if lengths:  # start the thread pool and caches before the first timed step
        busy(0.1)
        time.sleep(lengths[0][1])
    for busy_s, idle_s in lengths:
        if stop():
            break
        t0 = time.monotonic()
        busy(busy_s)
        t1 = time.monotonic()
        intervals.append((t0, t1))
        time.sleep(idle_s)
    return intervals


def busy_fraction(intervals: Sequence[tuple[float, float]], a: float, b: float) -> float:
    """Share of [a, b] inside the busy intervals (at a when a == b)."""
    if b <= a:
        return 1.0 if any(s <= a < e for s, e in intervals) else 0.0
    inside = sum(max(0.0, min(b, e) - max(a, s)) for s, e in intervals)
    return inside / (b - a)


def estimate_lag(
    samples: Sequence[Sample],
    intervals: Sequence[tuple[float, float]],
    *,
    meter_period_s: float,
    max_lag_s: float,
) -> LagEstimate:
    """Fit the lag (and averaging width) of ``samples`` against the busy ``intervals``."""
    usable = [s for s in samples if s.fresh and s.watts is not None]
    steps = len(intervals)
    if len(usable) < MIN_SAMPLES or steps == 0:
        return LagEstimate(
            None, None, None, None, len(usable), steps,
            f"{len(usable)} fresh readings over {steps} load steps (at least {MIN_SAMPLES})",
        )  # fmt: skip
    widths = sorted({0.0, meter_period_s / 2, meter_period_s})
    ws = [float(s.watts) for s in usable]  # type: ignore[arg-type]
    mean_w = sum(ws) / len(ws)
    total = sum((w - mean_w) ** 2 for w in ws)
    best: tuple[float, float, float, float, float, float] | None = None  # sse, lag, width, a, b, se

    def consider(lag: float, width: float) -> None:
        nonlocal best
        xs = [
            busy_fraction(intervals, s.t - lag - width / 2, s.t - lag + width / 2) for s in usable
        ]
        fit = _line_fit(xs, ws)
        # power rises under load: a falling fit is the steps matched one level off
        # (nearly periodic steps), never the meter's lag
        if fit is not None and fit[1] > 0 and (best is None or fit[2] < best[0] - 1e-12):
            best = (fit[2], lag, width, fit[0], fit[1], fit[3])

    # a coarse grid well past the limit (so that a lag beyond it is found, and refused as
    # such rather than as a meter that does not follow the load), then a fine one
    n_coarse = round((_search_end_s(max_lag_s) - MIN_LAG_S) / COARSE_STEP_S) + 1
    for width in widths:
        for k in range(n_coarse):
            consider(MIN_LAG_S + k * COARSE_STEP_S, width)
    if best is not None:
        centre, width = best[1], best[2]
        n_fine = round(2 * COARSE_STEP_S / LAG_STEP_S)
        for k in range(n_fine + 1):
            consider(centre - COARSE_STEP_S + k * LAG_STEP_S, width)
    if best is None or total <= 0:
        return LagEstimate(
            None, None, None, None, len(usable), steps,
            f"the readings do not rise under load at any lag up to "
            f"{_search_end_s(max_lag_s):.2g} s",
        )  # fmt: skip
    sse, lag, width, _a, rise, se = best
    r2 = 1.0 - sse / total
    problem = None
    if rise <= MIN_T * se:
        problem = (
            f"the readings do not rise clearly under load (fitted rise {rise:.3g} W, "
            f"standard error {se:.2g} W)"
        )
    elif lag > max_lag_s:
        problem = f"lag {lag:.2f} s exceeds the limit of {max_lag_s:g} s"
    return LagEstimate(None if problem else lag, width, r2, rise, len(usable), steps, problem)


def _search_end_s(max_lag_s: float) -> float:
    """The longest lag tried: half again the limit, and at least a second past it."""
    return max(1.5 * max_lag_s, max_lag_s + 1.0)


def _line_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float, float] | None:
    """Least squares y = a + b x: (a, b, sum of squared errors, standard error of b);
    None when x is constant."""
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 1e-12:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx
    a = my - b * mx
    sse = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    se_b = (sse / max(n - 2, 1) / sxx) ** 0.5
    return a, b, sse, se_b


def spin(seconds: float) -> None:
    """Keep every core busy for ``seconds``: matrix products on as many torch threads as
    there are cores (the job's own thread count is restored after)."""
    import os

    deadline = time.monotonic() + seconds
    try:
        import torch
    except ImportError:  # a pure-Python spin keeps one core busy
        while time.monotonic() < deadline:
            pass
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        a = torch.ones(384, 384)
        while time.monotonic() < deadline:
            torch.mm(a, a)
    finally:
        torch.set_num_threads(threads)
