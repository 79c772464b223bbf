"""One read-only SQL statement on the results database: ``tslm-fleet query``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from db.errors import map_driver_error
from db.roles import require_reader


@dataclass(frozen=True)
class SqlResult:
    """Columns and rows of a raw SQL query."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def run_sql(engine: Engine, sql: str, max_rows: int | None = None) -> SqlResult:
    """Run one SQL statement in a transaction that the database itself keeps read-only.

    The engine must come from a read-only store (SQLite opened with ``mode=ro``;
    PostgreSQL sessions with read-only transactions by default). On PostgreSQL the
    transaction is also declared ``READ ONLY`` before the statement, and the statement
    is sent on its own through the extended protocol, so it cannot end that transaction
    and start another; and the session's role must be one that can only read
    (:func:`db.roles.require_reader`), since a superuser escapes a read-only transaction. The transaction is always rolled back. The SQL text is passed to
    the database untouched (no bind-parameter parsing).
    """
    dbapi_error = engine.dialect.loaded_dbapi.Error
    try:
        with engine.connect() as conn:
            conn.begin()
            extra: dict[str, Any] = {}
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                require_reader(conn)
                extra["prepare"] = True
            cursor = conn.connection.driver_connection.cursor()
            try:
                cursor.execute(sql, **extra)
                if cursor.description is None:
                    return SqlResult(columns=[], rows=[])
                columns = [d[0] for d in cursor.description]
                raw = cursor.fetchmany(max_rows) if max_rows else cursor.fetchall()
                return SqlResult(columns=columns, rows=[tuple(r) for r in raw])
            finally:
                cursor.close()
                conn.rollback()
    except dbapi_error as exc:
        raise map_driver_error(exc, "query") from exc
    except DBAPIError as exc:
        raise map_driver_error(exc.orig, "query") from exc
