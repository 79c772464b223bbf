"""The labgrid places a run holds (``place_holds``): opened on acquire, closed on release.

A hold still open after the controller stopped is a place the run may still hold on the
coordinator: ``--resume`` reuses it, ``tslm-fleet lab release RUN_ID`` lets it go.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from db.errors import mapped_errors
from db.formatting import iso_utc
from db.schema import PlaceHold, utc_now

#: how a hold ended
HOLD_OUTCOMES = ("released", "lost", "gone")


@dataclass(frozen=True)
class Hold:
    """One place held (or once held) for a device of a run."""

    run_id: str
    device: str
    place: str
    coordinator: str
    holder: str
    acquired_at: str | None
    released_at: str | None
    outcome: str | None

    @property
    def open(self) -> bool:
        return self.released_at is None


def _row(hold: PlaceHold) -> Hold:
    return Hold(
        run_id=hold.run_id,
        device=hold.device,
        place=hold.place,
        coordinator=hold.coordinator,
        holder=hold.holder,
        acquired_at=iso_utc(hold.acquired_at),
        released_at=iso_utc(hold.released_at),
        outcome=hold.outcome,
    )


def open_hold(
    engine: Engine,
    where: str,
    *,
    run_id: str,
    device: str,
    place: str,
    coordinator: str,
    holder: str,
) -> None:
    """Record that ``place`` was acquired for ``device`` of run ``run_id`` (a resumed run
    that acquires again reopens its row)."""
    with Session(engine) as s, mapped_errors(where):
        row = s.scalar(
            select(PlaceHold).where(PlaceHold.run_id == run_id, PlaceHold.device == device)
        )
        if row is None:
            row = PlaceHold(run_id=run_id, device=device)
            s.add(row)
        row.place, row.coordinator, row.holder = place, coordinator, holder
        row.acquired_at, row.released_at, row.outcome = utc_now(), None, None
        s.commit()


def close_hold(engine: Engine, where: str, *, run_id: str, device: str, outcome: str) -> None:
    """Record that the device's place was let go (``outcome``: released, lost, gone)."""
    if outcome not in HOLD_OUTCOMES:
        raise ValueError(f"unknown hold outcome {outcome!r}")
    with Session(engine) as s, mapped_errors(where):
        row = s.scalar(
            select(PlaceHold).where(PlaceHold.run_id == run_id, PlaceHold.device == device)
        )
        if row is not None and row.released_at is None:
            row.released_at, row.outcome = utc_now(), outcome
            s.commit()


def holds_of(engine: Engine, where: str, run_id: str) -> list[Hold]:
    """Every hold of a run, by device name."""
    with Session(engine) as s, mapped_errors(where):
        rows = s.scalars(
            select(PlaceHold).where(PlaceHold.run_id == run_id).order_by(PlaceHold.device)
        )
        return [_row(r) for r in rows]
