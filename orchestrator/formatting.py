"""Numbers with units, durations and sparklines as the run dashboard prints them.

Numbers go through :func:`tasks.numbers.format_sig` (three significant digits at most:
the meters and timers behind them do not support more); a missing value reads
:data:`tasks.numbers.MISSING`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from tasks.numbers import MISSING, format_sig

SPARK_LEVELS = "▁▂▃▄▅▆▇█"


def format_power(watts: float | None) -> str:
    """``"3.21 W"``, or a dash when there is no reading."""
    return MISSING if watts is None else f"{format_sig(watts)} W"


def format_latency(seconds: float | None) -> str:
    """Latency in ms below one second (``"412 ms"``), in seconds above (``"1.23 s"``)."""
    if seconds is None:
        return MISSING
    if abs(seconds) < 1.0:
        return f"{format_sig(seconds * 1000.0)} ms"
    return f"{format_sig(seconds)} s"


def format_energy(joules: float | None) -> str:
    """``"1.23 J"``, or a dash when nothing was measured."""
    return MISSING if joules is None else f"{format_sig(joules)} J"


def format_temp(celsius: float | None) -> str:
    """CPU temperature to 0.1 °C, the resolution the boards report."""
    return MISSING if celsius is None else f"{celsius:.1f}°C"


def format_duration(seconds: float | None) -> str:
    """``"4:05"`` or ``"1:02:03"``; a dash for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    total = round(max(0.0, seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def sparkline(values: Iterable[float], *, width: int | None = None, min_span: float = 0.0) -> str:
    """One block character per value, from ``▁`` (lowest) to ``█`` (highest).

    The scale runs from the minimum to the maximum of the values shown (the last ``width``
    of them). When they span less than ``min_span``, the scale is widened to ``min_span``
    around their middle, so that noise below that size stays flat.
    """
    shown = [v for v in values if v is not None and math.isfinite(v)]
    if width is not None:
        shown = shown[-width:] if width > 0 else []
    if not shown:
        return ""
    low, high = min(shown), max(shown)
    if high - low < min_span:
        middle = (high + low) / 2.0
        low, high = middle - min_span / 2.0, middle + min_span / 2.0
    if high == low:
        return SPARK_LEVELS[0] * len(shown)
    top = len(SPARK_LEVELS) - 1
    return "".join(SPARK_LEVELS[round((v - low) / (high - low) * top)] for v in shown)
