"""Engines and migrations for the results database.

SQLite runs in WAL mode with foreign keys on and a busy timeout; write transactions start
with ``BEGIN IMMEDIATE`` so that concurrent writers queue on the busy timeout instead of
failing half-way. PostgreSQL goes through the same code with psycopg 3.

Read-only access is enforced by the database itself: SQLite files are opened with the
``mode=ro`` URI, PostgreSQL sessions default to read-only transactions.

Migrations (alembic, shipped inside this package) run automatically the first time a
writable store is opened (see :func:`db.store.open_store`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import NoSuchModuleError, OperationalError

from db.errors import DatabaseError
from db.urls import display_url, is_memory, parse_url

if TYPE_CHECKING:
    from alembic.config import Config

#: how long a SQLite writer waits for another writer's transaction before giving up
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: how long a PostgreSQL connection attempt may take
PG_CONNECT_TIMEOUT_S = 10


# --------------------------------------------------------------------------- engines


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for ``url`` configured for this application (see the module docstring)."""
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    configure = _BACKENDS.get(backend, _configure_other)
    kwargs, after = configure(parsed, read_only)
    try:
        engine = create_engine(kwargs.pop("url"), **kwargs)
    except NoSuchModuleError as exc:
        raise DatabaseError(
            f"no SQLAlchemy dialect for '{parsed.drivername}'",
            hint="use sqlite:// or postgresql+psycopg://",
        ) from exc
    except ModuleNotFoundError as exc:
        raise DatabaseError(
            f"the database driver for {display_url(url)} is not installed ({exc.name})",
            hint="for PostgreSQL: pip install 'tslm-fleet[postgres]'",
        ) from exc
    after(engine)
    return engine


def _configure_sqlite(url: URL, read_only: bool) -> tuple[dict[str, Any], Callable]:
    memory = is_memory(url)
    if read_only and not memory:
        path = Path(url.database)
        if not path.exists():
            raise DatabaseError(
                f"no results database at {path}",
                hint="run an experiment first (tslm-fleet run) or pass --db",
            )
        # the URI form lets SQLite itself refuse every write
        url = url.set(database=f"file:{path}", query={**url.query, "mode": "ro", "uri": "true"})
    elif not memory:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)

    def after(engine: Engine) -> None:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # take transaction control away from the sqlite3 module (see "begin" below)
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys = ON")
            if read_only:
                # mode=ro protects this file only: ATTACH and VACUUM INTO would create others
                dbapi_conn.set_authorizer(_deny_new_files)
            if not read_only and not memory:
                cur.execute("PRAGMA journal_mode = WAL")
                # in WAL mode NORMAL never corrupts; a power cut may lose the last commits
                cur.execute("PRAGMA synchronous = NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock up front: a deferred transaction that later
            # needs to write can fail with SQLITE_BUSY despite the busy timeout
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return {"url": url}, after


def _deny_new_files(action: int, *_args: Any) -> int:
    """SQLite authorizer of read-only connections: no ATTACH (nor VACUUM INTO, which attaches)."""
    import sqlite3

    return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_ATTACH else sqlite3.SQLITE_OK


def _configure_postgresql(url: URL, read_only: bool) -> tuple[dict[str, Any], Callable]:
    connect_args: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    if read_only:
        connect_args["options"] = "-c default_transaction_read_only=on"
    return {"url": url, "connect_args": connect_args, "pool_pre_ping": True}, lambda e: None


def _configure_other(url: URL, read_only: bool) -> tuple[dict[str, Any], Callable]:
    if read_only:
        raise DatabaseError(
            f"read-only access is not supported for {url.get_backend_name()}",
            hint="use SQLite or PostgreSQL for `tslm-fleet query`",
        )
    return {"url": url}, lambda e: None


#: backend name -> how to configure its engine
_BACKENDS: dict[str, Callable[[URL, bool], tuple[dict[str, Any], Callable]]] = {
    "sqlite": _configure_sqlite,
    "postgresql": _configure_postgresql,
}


# --------------------------------------------------------------------------- migrations


def alembic_config(engine: Engine | None = None) -> Config:
    """Alembic configuration pointing at the migrations shipped in ``db/migrations``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "db:migrations")
    if engine is not None:
        cfg.set_main_option(
            "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
        )
    return cfg


def head_revision() -> str:
    """The newest migration revision this version of tslm-fleet knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with _connect(engine) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(
    engine: Engine, revision: str = "head", announce: Callable[[str], None] | None = None
) -> tuple[str | None, str]:
    """Migrate the database to ``revision``; returns (revision before, revision after).

    The whole upgrade runs in one transaction (SQLite and PostgreSQL both have
    transactional DDL), so an interrupted upgrade leaves the database as it was.
    """
    from alembic import command

    before = current_revision(engine)
    target = head_revision() if revision == "head" else revision
    if before == target:
        return before, target
    if announce is not None:
        where = display_url(engine.url.render_as_string(hide_password=False))
        if before is None:
            announce(f"creating the results database schema (revision {target}) in {where}")
        else:
            announce(f"upgrading the results database {where} from revision {before} to {target}")
    cfg = alembic_config(engine)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except OperationalError as exc:
        raise DatabaseError(f"cannot migrate {display_url(str(engine.url))}: {exc.orig}") from exc
    return before, current_revision(engine) or target


def known_revision(revision: str) -> bool:
    """Whether this version's migrations include ``revision``."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _connect(engine: Engine) -> Any:
    try:
        return engine.connect()
    except OperationalError as exc:
        raise DatabaseError(
            f"cannot open the results database {display_url(str(engine.url))}: {exc.orig}",
            hint="check --db / TSLM_DB, that the server is running and the file is writable",
        ) from exc
