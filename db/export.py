"""Export one run for analysis elsewhere.

* ``.csv``: one line per query, with its trial's context (device, variant, method,
  compression ratio, task, meter, idle power) and every measured field;
* ``.json``: the run, its aggregated results (as ``tslm-fleet results --format json``)
  and every trial with its queries, windows, scores and messages.

The file is written to a temporary name and renamed, so a failed export never leaves a
half-written file behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from db.errors import DatabaseError
from db.formatting import iso_utc, records_to_csv
from db.results import ResultFilter, results
from db.schema import Artifact, Device, Message, Query, Run, Score, Trial, Window
from tasks.errors import ConfigError

_TRIAL_CONTEXT = (
    "run_id",
    "device",
    "variant",
    "method",
    "compression_ratio",
    "compression_ratio_source",
    "source_format",
    "size_bytes",
    "task",
    "trial_status",
    "meter_kind",
    "idle_power_w",
)


def _columns(model: type) -> list[str]:
    return [c.name for c in model.__table__.columns if c.name not in ("id", "trial_id")]


def _trials(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(
            Trial,
            Device.name,
            Artifact.method,
            Artifact.compression_ratio,
            Artifact.compression_ratio_source,
            Artifact.source_format,
            Artifact.size_bytes,
        )
        .join(Device, Trial.device_id == Device.id)
        .outerjoin(Artifact, Trial.artifact_id == Artifact.id)
        .where(Trial.run_id == run_id)
        .order_by(Trial.id)
    )
    with Session(engine) as session:
        return [
            {
                "trial_id": t.id,
                "run_id": t.run_id,
                "device": name,
                "variant": t.variant,
                "method": method,
                "compression_ratio": ratio,
                "compression_ratio_source": ratio_source,
                "source_format": source,
                "size_bytes": size,
                "task": t.task,
                "trial_status": getattr(t.status, "value", t.status),
                "meter_kind": t.meter_kind,
                "meter_description": t.meter_description,
                "meter_period_s": t.meter_period_s,
                "idle_power_w": t.idle_power_w,
                "started_at": iso_utc(t.started_at),
                "finished_at": iso_utc(t.finished_at),
                "error": t.error,
                "params": t.params,
            }
            for t, name, method, ratio, ratio_source, source, size in session.execute(stmt)
        ]


def _children(engine: Engine, model: type, trial_ids: list[int]) -> dict[int, list[dict]]:
    columns = _columns(model)
    out: dict[int, list[dict]] = {i: [] for i in trial_ids}
    table = model.__table__
    with engine.connect() as conn:
        stmt = (
            select(table.c.trial_id, *(table.c[c] for c in columns))
            .where(table.c.trial_id.in_(trial_ids))
            .order_by(table.c.trial_id, table.c.seq)
        )
        for row in conn.execute(stmt):
            record = dict(zip(columns, row[1:], strict=True))
            if "level" in record:
                record["level"] = getattr(record["level"], "value", record["level"])
            out[row[0]].append(record)
    return out


def _csv(engine: Engine, run_id: str) -> str:
    trials = _trials(engine, run_id)
    queries = _children(engine, Query, [t["trial_id"] for t in trials])
    records = [
        {**{k: t[k] for k in _TRIAL_CONTEXT}, **q} for t in trials for q in queries[t["trial_id"]]
    ]
    return records_to_csv(records, list(_TRIAL_CONTEXT) + _columns(Query))


def _json(engine: Engine, run_id: str) -> str:
    with Session(engine) as session:
        run = session.get_one(Run, run_id)
    trials = _trials(engine, run_id)
    ids = [t["trial_id"] for t in trials]
    children = {
        name: _children(engine, model, ids)
        for name, model in (
            ("queries", Query),
            ("windows", Window),
            ("scores", Score),
            ("messages", Message),
        )
    }
    for trial in trials:
        for name, by_trial in children.items():
            trial[name] = by_trial[trial["trial_id"]]
    document = {
        "run": {
            "run_id": run.id,
            "status": getattr(run.status, "value", run.status),
            "started_at": iso_utc(run.started_at),
            "finished_at": iso_utc(run.finished_at),
            "inventory_name": run.inventory_name,
            "model": run.model,
            "tool_version": run.tool_version,
            "config": run.config,
        },
        "results": [r.to_dict() for r in results(engine, ResultFilter(run_id=run_id))],
        "trials": trials,
    }
    return json.dumps(document, indent=2, default=str) + "\n"


#: file suffix -> writer
EXPORTERS: dict[str, Callable[[Engine, str], str]] = {".csv": _csv, ".json": _json}


def export_run(engine: Engine, run_id: str, out: str | Path) -> Path:
    """Write run ``run_id`` to ``out`` (format from the suffix); returns the path."""
    path = Path(out)
    writer = EXPORTERS.get(path.suffix.lower())
    if writer is None:
        raise ConfigError(
            f"cannot export to '{path.name}': unknown format '{path.suffix}'",
            hint=f"use one of: {', '.join(EXPORTERS)} (parquet is not supported; convert the CSV)",
        )
    with engine.connect() as conn:
        if conn.scalar(select(Run.id).where(Run.id == run_id)) is None:
            raise DatabaseError(
                f"no run '{run_id}' in the results database",
                hint="list the runs with: tslm-fleet runs",
            )
    content = writer(engine, run_id)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
    return path
