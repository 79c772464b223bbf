"""The runs in the results database, newest first, with their trial counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from db.formatting import iso_utc
from db.schema import Run, RunStatus, Trial, TrialStatus


@dataclass(frozen=True)
class RunRow:
    """One run with its trial counts by status."""

    run_id: str
    status: str
    started_at: str | None
    finished_at: str | None
    inventory_name: str | None
    model: str | None
    devices: int
    trials: int
    trials_ok: int
    trials_failed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def latest_run_id(engine: Engine) -> str | None:
    """The id of the most recently started run (None for an empty database)."""
    with engine.connect() as conn:
        return conn.scalar(select(Run.id).order_by(Run.started_at.desc(), Run.id.desc()).limit(1))


def runs(engine: Engine, limit: int | None = None) -> list[RunRow]:
    """Runs, newest first, with their trial counts."""

    def count(status: TrialStatus) -> Any:
        return func.sum(case((Trial.status == status, 1), else_=0))

    counts = (
        select(
            Trial.run_id,
            func.count().label("trials"),
            func.count(func.distinct(Trial.device_id)).label("devices"),
            count(TrialStatus.ok).label("ok"),
            count(TrialStatus.failed).label("failed"),
        )
        .group_by(Trial.run_id)
        .subquery()
    )
    stmt = (
        select(Run, counts.c.trials, counts.c.devices, counts.c.ok, counts.c.failed)
        .outerjoin(counts, counts.c.run_id == Run.id)
        .order_by(Run.started_at.desc(), Run.id.desc())
    )
    if limit:
        stmt = stmt.limit(limit)
    with Session(engine) as session:
        rows = list(session.execute(stmt))
    return [
        RunRow(
            run_id=r.Run.id,
            status=RunStatus(r.Run.status).value,
            started_at=iso_utc(r.Run.started_at),
            finished_at=iso_utc(r.Run.finished_at),
            inventory_name=r.Run.inventory_name,
            model=r.Run.model,
            devices=r.devices or 0,
            trials=r.trials or 0,
            trials_ok=int(r.ok or 0),
            trials_failed=int(r.failed or 0),
        )
        for r in rows
    ]
