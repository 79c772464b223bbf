"""Opening the results database: :func:`open_store` returns a :class:`Store`.

A :class:`Store` is the write side (:class:`db.ingest.Writer`, what a run calls) plus
the read side (:mod:`db.results`, :mod:`db.compare`, :mod:`db.runs`, :mod:`db.query`):
this module sits above both, and neither imports it.
"""

from __future__ import annotations

import sys

from sqlalchemy import inspect

from db.compare import CompareTable, compare
from db.engine import current_revision, head_revision, known_revision, make_engine, upgrade
from db.errors import DatabaseError
from db.holds import Hold, close_hold, holds_of, open_hold
from db.ingest import Writer
from db.query import SqlResult, run_sql
from db.results import ResultFilter, ResultRow, results
from db.runs import RunRow, runs
from db.urls import display_url, resolve_url


class Store(Writer):
    """The results database of one URL: write (see :class:`~db.ingest.Writer`) and read."""

    def results(self, filters: ResultFilter | None = None) -> list[ResultRow]:
        """Aggregated results (see :func:`db.results.results`)."""
        return results(self.engine, filters)

    def compare(
        self, run_id: str | None = None, by: str = "variant", task: str | None = None
    ) -> CompareTable:
        """The comparison table of a run (see :func:`db.compare.compare`)."""
        return compare(self.engine, run_id, by=by, task=task)

    def runs(self, limit: int | None = None) -> list[RunRow]:
        """Runs, newest first (see :func:`db.runs.runs`)."""
        return runs(self.engine, limit)

    def open_hold(
        self, *, run_id: str, device: str, place: str, coordinator: str, holder: str
    ) -> None:
        """Record a labgrid place acquired for a device of a run (see :mod:`db.holds`)."""
        open_hold(
            self.engine,
            self.where,
            run_id=run_id,
            device=device,
            place=place,
            coordinator=coordinator,
            holder=holder,
        )

    def close_hold(self, *, run_id: str, device: str, outcome: str) -> None:
        """Record that a device's place was let go (released, lost or gone)."""
        close_hold(self.engine, self.where, run_id=run_id, device=device, outcome=outcome)

    def holds(self, run_id: str) -> list[Hold]:
        """The labgrid places of a run, open and closed."""
        return holds_of(self.engine, self.where, run_id)

    def query(self, sql: str, max_rows: int | None = None) -> SqlResult:
        """One read-only SQL statement; needs a store opened with ``read_only=True``."""
        if not self.read_only:
            raise DatabaseError(
                "raw SQL runs only on a read-only store", hint="open_store(url, read_only=True)"
            )
        return run_sql(self.engine, sql, max_rows)


def open_store(
    url: str | None = None, *, read_only: bool = False, auto_upgrade: bool = True
) -> Store:
    """Open the results database (``url``, else ``$TSLM_DB``, else ``./results.db``).

    A writable store on a database that is empty or behind this version's schema is
    migrated first (one line on stderr) unless ``auto_upgrade`` is False, in which case
    (and always for read-only stores) a :class:`DatabaseError` says to run
    ``tslm-fleet db upgrade``.
    """
    resolved = resolve_url(url)
    engine = make_engine(resolved, read_only=read_only)
    try:
        current = current_revision(engine)
        head = head_revision()
        if current is not None and current != head and not known_revision(current):
            raise DatabaseError(
                f"the results database {display_url(resolved)} is at schema revision "
                f"{current}, which this tslm-fleet does not know",
                hint="it was written by a newer tslm-fleet: upgrade tslm-fleet",
            )
        if current != head:
            if current is None and read_only and not inspect(engine).get_table_names():
                raise DatabaseError(
                    f"{display_url(resolved)} holds no results yet",
                    hint="run an experiment first (tslm-fleet run)",
                )
            if read_only or not auto_upgrade:
                raise DatabaseError(
                    f"the results database {display_url(resolved)} is at schema revision "
                    f"{current or '(none)'}, this tslm-fleet needs {head}",
                    hint="run: tslm-fleet db upgrade" + (f" --db '{url}'" if url else ""),
                )
            upgrade(engine, announce=_stderr_line)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine, url=resolved, read_only=read_only)


def _stderr_line(message: str) -> None:
    print(f"tslm-fleet: {message}", file=sys.stderr)
