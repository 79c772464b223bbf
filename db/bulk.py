"""Fast bulk inserts of power samples, one strategy per database backend.

SQLite takes plain tuples through the driver's ``executemany`` (no per-row SQLAlchemy
processing); PostgreSQL streams rows with ``COPY``; any other backend goes through a
SQLAlchemy Core ``executemany``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from db.schema import PowerSample

SampleRow = tuple[float, float | None, float | None, float | None, bool]
_COLUMNS = ("trial_id", "t", "watts", "volts", "amps", "fresh")


def _sqlite(conn: Connection, trial_id: int, rows: Sequence[SampleRow]) -> None:
    sql = f"INSERT INTO power_samples ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)"
    conn.exec_driver_sql(sql, [(trial_id, t, w, v, a, 1 if f else 0) for t, w, v, a, f in rows])


def _postgresql(conn: Connection, trial_id: int, rows: Sequence[SampleRow]) -> None:
    raw = conn.connection.driver_connection
    if not hasattr(raw.cursor(), "copy"):  # a driver other than psycopg 3
        _generic(conn, trial_id, rows)
        return
    sql = f"COPY power_samples ({', '.join(_COLUMNS)}) FROM STDIN"
    with raw.cursor() as cursor, cursor.copy(sql) as copy:
        for t, w, v, a, f in rows:
            copy.write_row((trial_id, t, w, v, a, bool(f)))


def _generic(conn: Connection, trial_id: int, rows: Sequence[SampleRow]) -> None:
    conn.execute(
        insert(PowerSample),
        [
            {"trial_id": trial_id, "t": t, "watts": w, "volts": v, "amps": a, "fresh": bool(f)}
            for t, w, v, a, f in rows
        ],
    )


#: backend name -> bulk insert strategy
BULK_INSERTERS: dict[str, Callable[[Connection, int, Sequence[SampleRow]], Any]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
}


def bulk_insert_power_samples(conn: Connection, trial_id: int, rows: Sequence[SampleRow]) -> None:
    """Insert ``rows`` for the trial inside the caller's transaction."""
    inserter = BULK_INSERTERS.get(conn.dialect.name, _generic)
    inserter(conn, trial_id, rows)
