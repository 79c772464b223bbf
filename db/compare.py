"""The paper-style comparison table of one run.

By default variants are rows and devices are column groups, each group holding the
compression ratio, perplexity, accuracy, latency, decode time per token, peak resident
memory, energy per query, net energy per query and the energy per prefill and per decode
token of generation (``by="device"`` swaps rows and groups). A run with several tasks gets one row per
(variant, task); the perplexity of a (variant, device) is taken from whichever of its
trials reported one, so a generation row shows the perplexity measured by the perplexity
task of the same variant on the same device. Accuracy (``acc`` of the ``choice`` or
``last-word`` task) does not depend on the board: a row without its own is shown the
accuracy of the same variant on the same device, else on the ``controller`` (where
``on=controller`` runs quality tasks once per variant).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from db.errors import DatabaseError
from db.formatting import TextTable, format_spread, format_vs_source, round_record
from db.results import ResultFilter, ResultRow, results
from db.runs import latest_run_id
from tasks.errors import ConfigError
from tasks.numbers import format_sig

#: the two layouts: name -> (row key, group key) of a result row
LAYOUTS: dict[str, tuple[Callable[[ResultRow], str], Callable[[ResultRow], str]]] = {
    "variant": (lambda r: r.variant, lambda r: r.device),
    "device": (lambda r: r.device, lambda r: r.variant),
}
CELL_HEADERS = [
    "ratio",
    "vs_source",
    "disk_mb",
    "ppl",
    "acc",
    "latency_s",
    "decode_ms/tok",
    "peak_rss_mb",
    "energy_j/query",
    "net_energy_j/query",
    "j/prefill_tok",
    "j/decode_tok",
]
#: score metrics read as the accuracy of a trial, in order of preference
ACCURACY_METRICS = ("acc",)
#: the device quality tasks run with on=controller are stored under
CONTROLLER_DEVICE = "controller"
#: flags worth a note under the table (the energy source is in the JSON only)
NOTE_FLAGS = (
    "failed",
    "incomplete",
    "no-meter",
    "under-resolved",
    "throttled",
    "few-queries",
    "prefill-under-resolved",
    "decode-under-resolved",
    "unstable-start",
    "idle-drift",
)


@dataclass(frozen=True)
class CompareCell:
    """One (row, group) of the table; ``*_half_iqr`` is the spread printed after ±."""

    compression_ratio: float | None
    #: ratio against the source model's stored format (named in ``source_format``)
    compression_ratio_source: float | None
    source_format: str | None
    size_bytes: int | None
    perplexity: float | None
    accuracy: float | None
    latency_s_median: float | None
    latency_s_half_iqr: float | None
    #: the agent's median decode time per generated token and its peak resident set
    decode_s_per_token: float | None
    peak_rss_bytes: int | None
    energy_j_per_query_median: float | None
    energy_j_per_query_half_iqr: float | None
    net_energy_j_per_query_median: float | None
    net_energy_j_per_query_half_iqr: float | None
    energy_j_per_prefill_token_median: float | None
    energy_j_per_prefill_token_half_iqr: float | None
    energy_j_per_decode_token_median: float | None
    energy_j_per_decode_token_half_iqr: float | None
    n_queries: int
    flags: list[str]
    status: str


@dataclass(frozen=True)
class CompareRow:
    """One row: a variant (or device) and task, with one cell per group."""

    key: str
    task: str
    cells: dict[str, CompareCell] = field(default_factory=dict)


@dataclass(frozen=True)
class CompareTable:
    """The comparison of one run."""

    run_id: str
    by: str
    groups: list[str]
    rows: list[CompareRow]

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-ready rows: ``{by, task, <group>: {cell fields}}``, floats rounded."""
        return [
            {
                self.by: row.key,
                "task": row.task,
                **{g: round_record(asdict(c)) for g, c in row.cells.items()},
            }
            for row in self.rows
        ]

    def to_text_table(self) -> TextTable:
        """Formatted cells (median ± half-IQR) with the flags as notes."""
        several_tasks = len({row.task for row in self.rows}) > 1
        lead = [self.by] + (["task"] if several_tasks else [])
        headers = lead + CELL_HEADERS * len(self.groups)
        body, notes = [], []
        for row in self.rows:
            cells = [row.key] + ([row.task] if several_tasks else [])
            for group in self.groups:
                cell = row.cells.get(group)
                cells += _format_cell(cell)
                flagged = [f for f in (cell.flags if cell else []) if f in NOTE_FLAGS]
                if flagged:
                    notes.append(f"{row.key} / {row.task} on {group}: {', '.join(flagged)}")
            body.append(cells)
        groups = [("", len(lead))] + [(g, len(CELL_HEADERS)) for g in self.groups]
        notes.append("values: median ± half the interquartile range")
        notes.append(
            "j/prefill_tok: energy from a query's start to its first token per prompt "
            "token; j/decode_tok: energy after the first token per further token"
        )
        notes.append(
            "ratio: against float32; vs_source: against the model file's own storage of the "
            "table (format in brackets); disk_mb: the artifact's bytes on disk"
        )
        notes.append(
            "decode_ms/tok: median time per generated token after the first; peak_rss_mb: "
            "the agent process's peak resident set over the trial"
        )
        return TextTable(
            headers=headers, rows=body, groups=groups, notes=notes, title=f"run {self.run_id}"
        )


def _format_cell(cell: CompareCell | None) -> list[str]:
    if cell is None:
        return [format_sig(None)] * len(CELL_HEADERS)
    return [
        format_sig(cell.compression_ratio),
        format_vs_source(cell.compression_ratio_source, cell.source_format),
        format_sig(None if cell.size_bytes is None else cell.size_bytes / 1e6),
        format_sig(cell.perplexity),
        format_sig(cell.accuracy),
        format_spread(cell.latency_s_median, cell.latency_s_half_iqr),
        format_sig(None if cell.decode_s_per_token is None else cell.decode_s_per_token * 1e3),
        format_sig(None if cell.peak_rss_bytes is None else cell.peak_rss_bytes / 1e6),
        format_spread(cell.energy_j_per_query_median, cell.energy_j_per_query_half_iqr),
        format_spread(cell.net_energy_j_per_query_median, cell.net_energy_j_per_query_half_iqr),
        format_spread(
            cell.energy_j_per_prefill_token_median, cell.energy_j_per_prefill_token_half_iqr
        ),
        format_spread(
            cell.energy_j_per_decode_token_median, cell.energy_j_per_decode_token_half_iqr
        ),
    ]


def _accuracy(row: ResultRow) -> float | None:
    return next((row.scores[m] for m in ACCURACY_METRICS if m in row.scores), None)


def _first_not_none(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def _half(iqr: float | None) -> float | None:
    return None if iqr is None else iqr / 2


def compare(
    engine: Engine, run_id: str | None = None, by: str = "variant", task: str | None = None
) -> CompareTable:
    """The comparison table of ``run_id`` (default: the latest run)."""
    if by not in LAYOUTS:
        raise ConfigError(f"--by {by!r} is not one of {', '.join(LAYOUTS)}")
    run_id = run_id or latest_run_id(engine)
    if run_id is None:
        raise DatabaseError(
            "the results database holds no runs yet",
            hint="run an experiment first (tslm-fleet run)",
        )
    rows = results(engine, ResultFilter(run_id=run_id, task=task))
    if not rows:
        raise DatabaseError(
            f"no results for run '{run_id}'" + (f" and task '{task}'" if task else ""),
            hint="list the runs with: tslm-fleet runs",
        )
    perplexity: dict[tuple[str, str], float] = {}
    accuracy: dict[tuple[str, str], float] = {}
    for r in rows:
        if r.perplexity is not None:
            perplexity.setdefault((r.variant, r.device), r.perplexity)
        if _accuracy(r) is not None:
            accuracy.setdefault((r.variant, r.device), _accuracy(r))
    row_key, group_key = LAYOUTS[by]
    ordered = sorted(rows, key=lambda r: (r.compression_ratio or 0.0, r.variant, r.device))
    groups = list(dict.fromkeys(group_key(r) for r in ordered))
    # board-independent quality measured once on the controller: its column comes last
    groups.sort(key=lambda g: by == "variant" and g == CONTROLLER_DEVICE)
    table: dict[tuple[str, str], CompareRow] = {}
    for r in ordered:
        row = table.setdefault((row_key(r), r.task), CompareRow(key=row_key(r), task=r.task))
        row.cells[group_key(r)] = CompareCell(
            compression_ratio=r.compression_ratio,
            compression_ratio_source=r.compression_ratio_source,
            source_format=r.source_format,
            size_bytes=r.size_bytes,
            perplexity=r.perplexity or perplexity.get((r.variant, r.device)),
            accuracy=_first_not_none(
                _accuracy(r),
                accuracy.get((r.variant, r.device)),
                accuracy.get((r.variant, CONTROLLER_DEVICE)),
            ),
            latency_s_median=r.latency_s_median,
            latency_s_half_iqr=_half(r.latency_s_iqr),
            decode_s_per_token=r.decode_s_per_token,
            peak_rss_bytes=r.peak_rss_bytes,
            energy_j_per_query_median=r.energy_j_per_query_median,
            energy_j_per_query_half_iqr=_half(r.energy_j_per_query_iqr),
            net_energy_j_per_query_median=r.net_energy_j_per_query_median,
            net_energy_j_per_query_half_iqr=_half(r.net_energy_j_per_query_iqr),
            energy_j_per_prefill_token_median=r.energy_j_per_prefill_token_median,
            energy_j_per_prefill_token_half_iqr=_half(r.energy_j_per_prefill_token_iqr),
            energy_j_per_decode_token_median=r.energy_j_per_decode_token_median,
            energy_j_per_decode_token_half_iqr=_half(r.energy_j_per_decode_token_iqr),
            n_queries=r.n_queries,
            flags=list(r.flags),
            status=r.status,
        )
    return CompareTable(run_id=run_id, by=by, groups=groups, rows=list(table.values()))
