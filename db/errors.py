"""Errors of the results database, and driver errors mapped to them.

    TslmError                  (tasks.errors)
    └── DatabaseError          the results database cannot be opened, migrated or queried
        ├── ReadOnlyError      a write was attempted through a read-only query
        └── UnsafeRoleError    `query` on PostgreSQL with a role that can write

Read-only violations (SQLite ``SQLITE_READONLY``, PostgreSQL SQLSTATE 25006) become
:class:`ReadOnlyError`; every other driver error a :class:`DatabaseError` naming the
database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, IntegrityError

from tasks.errors import TslmError


class DatabaseError(TslmError):
    """The results database cannot be opened, migrated or queried."""


class ReadOnlyError(DatabaseError):
    """A write was attempted through a read-only query."""


class UnsafeRoleError(DatabaseError):
    """``tslm-fleet query`` on PostgreSQL with a role that can write or is a superuser."""


@contextmanager
def mapped_errors(where: str) -> Iterator[None]:
    """Turn driver errors raised inside the block into DatabaseError / ReadOnlyError.

    ``where`` names the database in messages (a URL with its password hidden).
    """
    try:
        yield
    except DBAPIError as exc:
        raise map_db_error(exc, where) from exc


def map_db_error(exc: DBAPIError, where: str) -> DatabaseError:
    """Our exception for a SQLAlchemy-wrapped driver error."""
    if isinstance(exc, IntegrityError):
        return DatabaseError(f"{where}: constraint violated: {_first_line(exc.orig)}")
    return map_driver_error(exc.orig if exc.orig is not None else exc, where)


def map_driver_error(orig: BaseException, where: str) -> DatabaseError:
    """Our exception for a raw driver error: read-only violations become ReadOnlyError."""
    text = _first_line(orig)
    if is_read_only_violation(orig):
        return ReadOnlyError(
            f"the database refused a write: {text}",
            hint="`tslm-fleet query` is read-only; use SELECT statements",
        )
    return DatabaseError(
        f"{where}: {text}", hint="check the SQL, --db / TSLM_DB, and that the database is reachable"
    )


def is_read_only_violation(orig: BaseException | None) -> bool:
    """Whether a driver error is the database refusing a write in read-only mode."""
    if getattr(orig, "sqlstate", None) == "25006":  # PostgreSQL read_only_sql_transaction
        return True
    name = getattr(orig, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_READONLY") or "readonly database" in str(orig)


def _first_line(exc: BaseException | None) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
