"""Numbers with no more digits than the measurement supports, and plain-text tables.

* :func:`format_sig` — a value to at most 3 significant figures (from :mod:`tasks.numbers`,
  the one number formatter);
* :func:`format_spread` — ``median ± half-IQR``, both rounded to the decimal place the
  spread supports, and never more than 3 significant figures of the median;
* :func:`round_sig` — numeric rounding (4 significant figures) for JSON and CSV, one
  guard digit more than the tables print;
* :class:`TextTable` with markdown, CSV and JSON renderers (the CLI adds rich tables).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tasks.numbers import MISSING, SIG, decimals_for, fixed, format_sig

#: significant figures of a median in tables
TABLE_SIG = SIG
#: significant figures of numbers in machine-readable output
DATA_SIG = 4


def format_spread(median: float | None, half_iqr: float | None, sig: int = TABLE_SIG) -> str:
    """``median ± half_iqr`` rounded to what the spread supports (see module docstring)."""
    if median is None or not math.isfinite(median):
        return MISSING
    if half_iqr is None or not math.isfinite(half_iqr) or half_iqr <= 0 or median == 0:
        return format_sig(median, sig)
    if abs(median) >= 1e6 or abs(median) < 1e-4:
        return format_sig(median, sig)
    # the spread keeps two figures when it starts with 1 or 2 (e.g. 0.012, 0.25), else one
    leading = half_iqr / 10 ** math.floor(math.log10(half_iqr))
    spread_decimals = decimals_for(half_iqr, 2 if leading < 3 else 1)
    decimals = min(spread_decimals, decimals_for(median, sig))
    spread_text = fixed(half_iqr, decimals)
    if float(spread_text) == 0:
        return fixed(median, decimals)
    return f"{fixed(median, decimals)} ± {spread_text}"


def round_sig(value: Any, sig: int = DATA_SIG) -> Any:
    """Round floats to ``sig`` significant figures (other values pass through)."""
    if isinstance(value, bool) or not isinstance(value, float):
        return value
    if not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return round(value, decimals_for(value, sig))


def round_record(record: dict[str, Any], sig: int = DATA_SIG) -> dict[str, Any]:
    """A copy of ``record`` with every float (also in nested dicts) rounded."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        out[key] = round_record(value, sig) if isinstance(value, dict) else round_sig(value, sig)
    return out


@dataclass(frozen=True)
class TextTable:
    """Column headers and rows of already formatted cells, with optional group headers.

    ``groups`` is a list of ``(label, span)`` covering the columns left to right; it is
    shown as an extra header line (markdown) or prefixed to column names (CSV).
    """

    headers: list[str]
    rows: list[list[str]]
    title: str | None = None
    groups: list[tuple[str, int]] = field(default_factory=list)
    #: lines printed under the table (flags, footnotes)
    notes: list[str] = field(default_factory=list)

    def flat_headers(self) -> list[str]:
        """Headers prefixed with their group label (``pi5 latency_s``)."""
        if not self.groups:
            return list(self.headers)
        names, col = [], 0
        for label, span in self.groups:
            for header in self.headers[col : col + span]:
                names.append(f"{label} {header}".strip() if label else header)
            col += span
        return names

    def to_markdown(self) -> str:
        """A GitHub-flavoured markdown table (group labels prefixed to headers)."""

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        out = [f"**{self.title}**", ""] if self.title else []
        out += [line(self.flat_headers()), line(["---"] * len(self.headers))]
        out += [line(row) for row in self.rows]
        if self.notes:
            out += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(out) + "\n"

    def to_csv(self) -> str:
        """CSV with one header line."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.flat_headers())
        writer.writerows(self.rows)
        return buf.getvalue()


def records_to_csv(records: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV of flat records; lists are joined with ``;`` and dicts written as JSON."""
    columns = list(columns or (records[0].keys() if records else []))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow([_csv_cell(record.get(c)) for c in columns])
    return buf.getvalue()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def to_json(data: Any) -> str:
    """Indented JSON; datetimes and other objects as strings."""
    return json.dumps(data, indent=2, default=str) + "\n"


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 text of a stored UTC time (None stays None)."""
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they are stored as UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat(timespec="seconds")


def format_vs_source(ratio: float | None, source: str | None) -> str:
    """A ratio against the source model's stored format, with that format: ``3.8 (Q8_0)``."""
    if ratio is None:
        return MISSING
    return f"{format_sig(ratio)} ({source})" if source else format_sig(ratio)
