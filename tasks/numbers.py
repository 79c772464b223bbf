"""Numbers printed with no more digits than the measurement behind them supports.

:func:`format_sig` is the one number formatter of tslm-fleet: the result tables, the
run dashboard and the benchmark reports all print through it, and all show a missing
value as :data:`MISSING`.
"""

from __future__ import annotations

import math

#: how every table and display shows a value that was not measured
MISSING = "—"
#: significant figures of a printed value
SIG = 3


def decimals_for(value: float, sig: int) -> int:
    """Decimal places that show ``sig`` significant figures of ``value`` (may be < 0)."""
    return sig - 1 - math.floor(math.log10(abs(value)))


def fixed(value: float, decimals: int, *, grouped: bool = False) -> str:
    """``value`` rounded to ``decimals`` places (``decimals`` < 0 rounds to tens, ...)."""
    comma = "," if grouped else ""
    if decimals > 0:
        return f"{value:{comma}.{decimals}f}"
    return f"{round(value, decimals):{comma}.0f}"


def format_sig(value: float | None, sig: int = SIG, *, grouped: bool = False) -> str:
    """``value`` to ``sig`` significant figures, in plain notation; :data:`MISSING` for
    None and not-a-number.

    ``format_sig(3.14159) == "3.14"``, ``format_sig(1234.5) == "1230"``,
    ``format_sig(9.996) == "10.0"``. Magnitudes below 1e-4, or from 1e6 up (1e9 with
    ``grouped``, which separates thousands: ``"248,000"``), use an exponent.
    """
    if value is None or not math.isfinite(value):
        return MISSING
    if value == 0:
        return "0"
    rounded = float(f"{value:.{sig - 1}e}")  # rounding first settles carries (9.996 -> 10.0)
    magnitude = math.floor(math.log10(abs(rounded)))
    if magnitude < -4 or magnitude >= (9 if grouped else 6):
        return f"{value:.{sig - 1}e}"
    return fixed(rounded, sig - 1 - magnitude, grouped=grouped)
