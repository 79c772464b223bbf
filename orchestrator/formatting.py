"""Numbers and sparklines as the run dashboard prints them.

Numbers are printed with three significant digits at most: the meters and timers behind
them do not support more.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

SPARK_LEVELS = "▁▂▃▄▅▆▇█"
NO_VALUE = "–"


def format_sig(value: float, digits: int = 3) -> str:
    """``value`` rounded to ``digits`` significant digits, in plain (not exponent) notation.

    ``format_sig(3.14159) == "3.14"``, ``format_sig(1234.5) == "1230"``,
    ``format_sig(0.012345) == "0.0123"``.
    """
    if not math.isfinite(value):
        return NO_VALUE
    if value == 0:
        return "0"
    rounded = float(f"{value:.{digits - 1}e}")  # rounding first settles carries (9.996 -> 10.0)
    exponent = math.floor(math.log10(abs(rounded)))
    decimals = digits - 1 - exponent
    if decimals > 0:
        return f"{rounded:.{decimals}f}"
    return str(int(rounded))


def format_power(watts: float | None) -> str:
    """``"3.21 W"``, or a dash when there is no reading."""
    return NO_VALUE if watts is None else f"{format_sig(watts)} W"


def format_latency(seconds: float | None) -> str:
    """Latency in ms below one second (``"412 ms"``), in seconds above (``"1.23 s"``)."""
    if seconds is None:
        return NO_VALUE
    if abs(seconds) < 1.0:
        return f"{format_sig(seconds * 1000.0)} ms"
    return f"{format_sig(seconds)} s"


def format_energy(joules: float | None) -> str:
    """``"1.23 J"``, or a dash when nothing was measured."""
    return NO_VALUE if joules is None else f"{format_sig(joules)} J"


def format_temp(celsius: float | None) -> str:
    """CPU temperature to 0.1 °C, the resolution the boards report."""
    return NO_VALUE if celsius is None else f"{celsius:.1f}°C"


def format_duration(seconds: float | None) -> str:
    """``"4:05"`` or ``"1:02:03"``; a dash for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return NO_VALUE
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
