"""Database URLs: which database to open, and how to name it in messages.

The database is any SQLAlchemy URL: ``--db URL``, else the ``TSLM_DB`` environment
variable, else ``sqlite:///results.db`` in the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError

from db.errors import DatabaseError

ENV_VAR = "TSLM_DB"
#: the URL ``tslm-fleet query`` reads from first (on PostgreSQL: a read-only role's)
QUERY_ENV_VAR = "TSLM_QUERY_DB"
DEFAULT_URL = "sqlite:///results.db"


def resolve_url(url: str | None) -> str:
    """The database URL to use: ``url``, else ``$TSLM_DB``, else ``sqlite:///results.db``.

    A relative SQLite path is made absolute against the working directory, so messages
    and ``tslm-fleet db path`` show where the file really is.
    """
    raw = url or os.environ.get(ENV_VAR) or DEFAULT_URL
    parsed = parse_url(raw)
    if parsed.get_backend_name() == "sqlite" and not is_memory(parsed):
        path = Path(parsed.database).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        parsed = parsed.set(database=str(path))
    return parsed.render_as_string(hide_password=False)


def resolve_query_url(url: str | None) -> str:
    """The URL of ``tslm-fleet query``: ``url``, else ``$TSLM_QUERY_DB``, else as
    :func:`resolve_url` (``$TSLM_DB``, then ``sqlite:///results.db``)."""
    return resolve_url(url or os.environ.get(QUERY_ENV_VAR) or None)


def display_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    return parse_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other backends and in-memory databases)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or is_memory(parsed):
        return None
    return Path(parsed.database)


def parse_url(raw: str) -> URL:
    """``raw`` as a SQLAlchemy URL; a :class:`DatabaseError` when it is not one."""
    try:
        return make_url(raw)
    except ArgumentError as exc:
        raise DatabaseError(
            f"'{raw}' is not a database URL",
            hint="use sqlite:///path/to/results.db or "
            "postgresql+psycopg://user@host:5432/dbname (via --db or TSLM_DB)",
        ) from exc


def is_memory(url: URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database."""
    return url.database in (None, "", ":memory:")
