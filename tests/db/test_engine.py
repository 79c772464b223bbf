"""Engines, URL resolution, automatic migrations and schema/migration agreement."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from db.engine import current_revision, head_revision, make_engine
from db.errors import DatabaseError
from db.schema import metadata
from db.store import open_store
from db.urls import DEFAULT_URL, resolve_url


def test_resolve_url_prefers_argument_then_env_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TSLM_DB", raising=False)
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'results.db'}"
    assert DEFAULT_URL.endswith("results.db")
    monkeypatch.setenv("TSLM_DB", "sqlite:///env.db")
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'env.db'}"
    assert resolve_url("postgresql+psycopg://u:pw@h/db") == "postgresql+psycopg://u:pw@h/db"


def test_bad_url_is_a_database_error() -> None:
    with pytest.raises(DatabaseError, match="not a database URL") as info:
        resolve_url("no such thing")
    assert info.value.hint


def test_first_open_migrates_once_with_a_message(
    db_url: str, capsys: pytest.CaptureFixture
) -> None:
    with open_store(db_url) as store:
        assert current_revision(store.engine) == head_revision()
    first = capsys.readouterr().err
    assert first.count("\n") == 1 and "creating the results database schema" in first
    with open_store(db_url):
        pass
    assert capsys.readouterr().err == ""


def test_without_auto_upgrade_an_empty_database_is_refused(db_url: str) -> None:
    with pytest.raises(DatabaseError, match="schema revision") as info:
        open_store(db_url, auto_upgrade=False)
    assert "tslm-fleet db upgrade" in (info.value.hint or "")


def test_read_only_open_of_a_missing_sqlite_file(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="no results database"):
        open_store(f"sqlite:///{tmp_path / 'absent.db'}", read_only=True)
    assert not (tmp_path / "absent.db").exists()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    engine.dispose()


def test_migrations_match_the_orm_metadata(store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), metadata
        )
    assert diff == []


def test_foreign_keys_are_enforced(store) -> None:
    with pytest.raises(DatabaseError, match="no trial"):
        store.ingest_events(
            424242, [{"seq": 1, "type": "phase", "t": 0.0, "wall": "x", "phase": "idle"}]
        )
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"), store.engine.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO queries (trial_id, seq, task, rep, "index", t_start, '
                "t_end, latency_s, prompt_tokens, output_tokens, samples, "
                "fresh_samples, under_resolved) VALUES (999, 1, 'g', 0, 0, 0, 1, 1,"
                " 1, 1, 0, 0, false)"
            )
        )


def test_a_database_from_a_newer_version_is_refused(db_url: str) -> None:
    with open_store(db_url) as store, store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    with pytest.raises(DatabaseError, match="does not know") as info:
        open_store(db_url)
    assert "newer tslm-fleet" in (info.value.hint or "")
