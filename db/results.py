"""Aggregated results per trial: what ``tslm-fleet results`` prints.

:func:`results` aggregates each (run, device, variant, task) trial into a
:class:`ResultRow`: median, p90, IQR and a 95% CI of the median for latency and
energy per query. Energy per query comes from the windows of back-to-back queries when
the trial has any (they hold enough meter samples even with a slow meter), else from the
per-query figures (all of them, under-resolved ones included, to avoid favouring long
queries); ``flags`` says which (``energy-from-windows`` /
``energy-from-queries``) and warns with ``throttled``, ``under-resolved``, ``no-meter``,
``failed``, ``incomplete``, ``few-queries``, ``prefill-under-resolved`` /
``decode-under-resolved`` (a phase too short for the meter in some windows),
``unstable-start`` (the board never settled before the baseline) and ``idle-drift``
(the idle power after the queries moved beyond the threshold). Energy per prefill and
per decode token are medians over the windows that resolve the phase; each row also
carries the trial's ``provenance`` and ``stability`` records. The paper-style table is in
:mod:`db.compare`, the list of runs in :mod:`db.runs`, read-only SQL in :mod:`db.query`.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.errors import map_db_error
from db.formatting import iso_utc
from db.schema import Artifact, Device, Query, Run, Score, Trial, TrialStatus, Window
from db.stats import Summary, summarize

#: ids per IN (...) clause, well below SQLite's variable limit
_CHUNK = 500
#: metric names treated as the task's perplexity
PERPLEXITY_METRICS = ("perplexity", "ppl")
#: below this many queries the CI of the median cannot be computed
FEW_QUERIES = 6
_NO_METER = {None, "", "none", "null"}


@dataclass(frozen=True)
class ResultFilter:
    """Which trials to aggregate; None means any. ``since`` compares to the run start."""

    run_id: str | None = None
    device: str | None = None
    variant: str | None = None
    task: str | None = None
    model: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class ResultRow:
    """One (run, device, variant, task) aggregated; None where not measured."""

    run_id: str
    device: str
    model: str | None
    variant: str
    method: str | None
    compression_ratio: float | None
    #: ratio against the source model's stored format of the table, and that format
    compression_ratio_source: float | None
    source_format: str | None
    #: bytes of the artifact on disk
    size_bytes: int | None
    task: str
    n_queries: int
    latency_s_median: float | None
    latency_s_p90: float | None
    latency_s_iqr: float | None
    latency_s_ci_low: float | None
    latency_s_ci_high: float | None
    ttft_s_median: float | None
    tokens_per_s_median: float | None
    energy_j_per_query_median: float | None
    energy_j_per_query_p90: float | None
    energy_j_per_query_iqr: float | None
    energy_j_per_query_ci_low: float | None
    energy_j_per_query_ci_high: float | None
    net_energy_j_per_query_median: float | None
    net_energy_j_per_query_iqr: float | None
    energy_source: str | None
    n_energy: int
    idle_power_w: float | None
    mean_power_w: float | None
    perplexity: float | None
    #: the agent's peak resident set over the trial (scope "job") or over its process
    #: (scope "process"), and the median decode seconds per generated token
    peak_rss_bytes: int | None
    peak_rss_scope: str | None
    decode_s_per_token: float | None
    meter: str | None
    flags: list[str]
    status: str
    trial_id: int
    started_at: str | None
    scores: dict[str, float] = field(default_factory=dict)
    #: per-phase energy of generation: medians (and IQR) over the windows whose phase is
    #: resolved (``prefill-under-resolved`` / ``decode-under-resolved`` flag the rest)
    energy_j_per_prefill_token_median: float | None = None
    energy_j_per_prefill_token_iqr: float | None = None
    energy_j_per_decode_token_median: float | None = None
    energy_j_per_decode_token_iqr: float | None = None
    #: board settings, firmware, meter facts, lag, fresh samples, the meter's error bound
    provenance: dict[str, Any] | None = None
    #: the stable-start wait and the idle drift after the queries
    stability: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict with every field."""
        return asdict(self)


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def _trial_rows(engine: Engine, filters: ResultFilter) -> list[Any]:
    model = func.coalesce(Artifact.model, Run.model)
    stmt = (
        select(
            Trial,
            Run.model.label("run_model"),
            Run.started_at.label("run_started"),
            Device.name.label("device_name"),
            Device.meter_kind.label("device_meter"),
            Artifact.model.label("artifact_model"),
            Artifact.method,
            Artifact.compression_ratio,
            Artifact.compression_ratio_source,
            Artifact.source_format,
            Artifact.size_bytes,
        )
        .join(Run, Trial.run_id == Run.id)
        .join(Device, Trial.device_id == Device.id)
        .outerjoin(Artifact, Trial.artifact_id == Artifact.id)
    )
    conditions = [
        (filters.run_id, Trial.run_id),
        (filters.device, Device.name),
        (filters.variant, Trial.variant),
        (filters.task, Trial.task),
        (filters.model, model),
    ]
    for value, column in conditions:
        if value is not None:
            stmt = stmt.where(column == value)
    if filters.since is not None:
        stmt = stmt.where(Run.started_at >= filters.since)
    stmt = stmt.order_by(
        Run.started_at,
        Trial.run_id,
        Device.name,
        Artifact.compression_ratio,
        Trial.variant,
        Trial.task,
    )
    with Session(engine) as session:
        return list(session.execute(stmt))


def _grouped(
    engine: Engine, trial_ids: Sequence[int], columns: Sequence[Any], *where: Any
) -> dict[int, list[Any]]:
    """Rows of ``columns`` (first column: trial id) grouped by trial."""
    out: dict[int, list[Any]] = defaultdict(list)
    with engine.connect() as conn:
        for chunk in _chunks(trial_ids):
            stmt = select(*columns).where(columns[0].in_(chunk), *where)
            for row in conn.execute(stmt).all():
                out[row[0]].append(row)
    return out


class _Columns:
    """Rows of one trial turned into columns, read by name (``cols.latency_s``)."""

    def __init__(self, names: Sequence[str], rows: list[tuple]) -> None:
        self.n = len(rows)
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        self.__dict__.update(zip(names, columns, strict=True))


_QUERY_NAMES = (
    "trial_id",
    "latency_s",
    "ttft_s",
    "tokens_per_s",
    "energy_j",
    "net_energy_j",
    "under_resolved",
    "throttled",
)
_WINDOW_NAMES = (
    "trial_id",
    "energy_j_per_query",
    "net_energy_j_per_query",
    "mean_power_w",
    "duration_s",
    "under_resolved",
    "throttled",
    "energy_j_per_prefill_token",
    "energy_j_per_decode_token",
    "prefill_under_resolved",
    "decode_under_resolved",
)
#: the phases of generation whose energy per token is reported
PHASES = ("prefill", "decode")


def results(engine: Engine, filters: ResultFilter | None = None) -> list[ResultRow]:
    """Aggregated results of every trial matching ``filters`` (all trials by default)."""
    filters = filters or ResultFilter()
    try:
        trials = _trial_rows(engine, filters)
        ids = [row.Trial.id for row in trials]
        queries = _grouped(engine, ids, [getattr(Query, c) for c in _QUERY_NAMES])
        windows = _grouped(
            engine, ids, [getattr(Window, c) for c in _WINDOW_NAMES], Window.kind == "queries"
        )
        scores = _grouped(engine, ids, (Score.trial_id, Score.metric, Score.value))
    except DBAPIError as exc:
        raise map_db_error(exc, "results query") from exc
    return [
        _aggregate(
            row,
            _Columns(_QUERY_NAMES, queries.get(row.Trial.id, [])),
            _Columns(_WINDOW_NAMES, windows.get(row.Trial.id, [])),
            scores.get(row.Trial.id, []),
        )
        for row in trials
    ]


def _aggregate(row: Any, queries: _Columns, windows: _Columns, scores: list[Any]) -> ResultRow:
    trial: Trial = row.Trial
    flags: list[str] = []
    latency = summarize(queries.latency_s)
    ttft = summarize(queries.ttft_s)
    tps = summarize(queries.tokens_per_s)

    energy, net, source, n_energy, under = _energy(queries, windows)
    if source:
        flags.append(f"energy-from-{source}")
    meter = trial.meter_kind or row.device_meter
    if meter in _NO_METER or (queries.n and source is None):
        flags.append("no-meter")
    if under:
        flags.append("under-resolved")
    if any(queries.throttled) or any(windows.throttled):
        flags.append("throttled")
    status = TrialStatus(trial.status)
    if status == TrialStatus.failed:
        flags.append("failed")
    elif status != TrialStatus.ok:
        flags.append("incomplete")
    if 0 < queries.n < FEW_QUERIES:
        flags.append("few-queries")
    phases = _phases(windows, flags)
    flags.extend(_stability_flags(trial.stability))

    by_metric: dict[str, list[float]] = defaultdict(list)
    for s in scores:
        by_metric[s.metric].append(s.value)
    score_medians = {m: statistics.median(v) for m, v in sorted(by_metric.items())}
    perplexity = next((score_medians[m] for m in PERPLEXITY_METRICS if m in score_medians), None)
    return ResultRow(
        run_id=trial.run_id,
        device=row.device_name,
        model=row.artifact_model or row.run_model,
        variant=trial.variant,
        method=row.method,
        compression_ratio=row.compression_ratio,
        compression_ratio_source=row.compression_ratio_source,
        source_format=row.source_format,
        size_bytes=row.size_bytes,
        task=trial.task,
        n_queries=queries.n,
        latency_s_median=latency.median,
        latency_s_p90=latency.p90,
        latency_s_iqr=latency.iqr,
        latency_s_ci_low=latency.ci_low,
        latency_s_ci_high=latency.ci_high,
        ttft_s_median=ttft.median,
        tokens_per_s_median=tps.median,
        energy_j_per_query_median=energy.median,
        energy_j_per_query_p90=energy.p90,
        energy_j_per_query_iqr=energy.iqr,
        energy_j_per_query_ci_low=energy.ci_low,
        energy_j_per_query_ci_high=energy.ci_high,
        net_energy_j_per_query_median=net.median,
        net_energy_j_per_query_iqr=net.iqr,
        energy_source=source,
        n_energy=n_energy,
        idle_power_w=trial.idle_power_w,
        mean_power_w=_mean_power(queries, windows),
        perplexity=perplexity,
        peak_rss_bytes=trial.peak_rss_bytes,
        peak_rss_scope=trial.peak_rss_scope,
        decode_s_per_token=trial.decode_s_per_token,
        meter=meter,
        flags=flags,
        status=status.value,
        trial_id=trial.id,
        started_at=iso_utc(trial.started_at or row.run_started),
        scores=score_medians,
        energy_j_per_prefill_token_median=phases["prefill"].median,
        energy_j_per_prefill_token_iqr=phases["prefill"].iqr,
        energy_j_per_decode_token_median=phases["decode"].median,
        energy_j_per_decode_token_iqr=phases["decode"].iqr,
        provenance=trial.provenance,
        stability=trial.stability,
    )


def _phases(windows: _Columns, flags: list[str]) -> dict[str, Summary]:
    """Energy per prefill and per decode token over the windows that resolve the phase."""
    out = {}
    for phase in PHASES:
        values = [v for v in getattr(windows, f"energy_j_per_{phase}_token") if v is not None]
        if any(u is True for u in getattr(windows, f"{phase}_under_resolved")):
            flags.append(f"{phase}-under-resolved")
        out[phase] = summarize(values)
    return out


def _stability_flags(record: dict[str, Any] | None) -> list[str]:
    """``unstable-start`` (never settled within the wait) and ``idle-drift``."""
    record = record or {}
    flags = []
    if record.get("stable") is False:
        flags.append("unstable-start")
    if record.get("drifted") is True:
        flags.append("idle-drift")
    return flags


def _energy(queries: _Columns, windows: _Columns) -> tuple[Summary, Summary, str | None, int, bool]:
    """(energy, net energy, source, count, under-resolved) per query, windows first.

    All measured windows (or queries) are kept, also the under-resolved ones: dropping
    them would favour the longer queries. The flag says that some were under-resolved.
    """
    for source, cols, energy, net in (
        ("windows", windows, windows.energy_j_per_query, windows.net_energy_j_per_query),
        ("queries", queries, queries.energy_j, queries.net_energy_j),
    ):
        measured = [i for i, e in enumerate(energy) if e is not None]
        if measured:
            if len(measured) < cols.n:
                energy = [energy[i] for i in measured]
                net = [net[i] for i in measured]
            under = any(cols.under_resolved[i] for i in measured)
            return summarize(energy), summarize(net), source, len(measured), under
    return summarize([]), summarize([]), None, 0, False


def _mean_power(queries: _Columns, windows: _Columns) -> float | None:
    timed = [
        (p, d)
        for p, d in zip(windows.mean_power_w, windows.duration_s, strict=True)
        if p is not None and d
    ]
    if timed:
        return sum(p * d for p, d in timed) / sum(d for _, d in timed)
    measured = [
        (e, t)
        for e, t in zip(queries.energy_j, queries.latency_s, strict=True)
        if e is not None and t > 0
    ]
    if measured:
        return sum(e for e, _ in measured) / sum(t for _, t in measured)
    return None
