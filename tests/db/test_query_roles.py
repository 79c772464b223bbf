"""``tslm-fleet query`` on PostgreSQL: only a role that can do nothing but read may run it.

A read-only transaction alone does not hold a superuser back (``COPY ... TO PROGRAM`` runs
a program inside one) and ``SET ROLE`` is undone by ``RESET ROLE``; these tests try each
of those through the real command and require every one refused, with nothing done.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from db.store import open_store
from testbed.postgres import scratch_database

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def tslm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("TSLM_DB", "TSLM_QUERY_DB")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
    )


def as_role(url: str, role: str) -> str:
    return make_url(url).set(username=role).render_as_string(hide_password=False)


@pytest.fixture
def admin(postgres_url: str) -> Iterator[str]:
    """A scratch database with one run in it, written by the superuser."""
    with scratch_database(postgres_url, f"tslm_{uuid.uuid4().hex[:12]}") as url:
        with open_store(url) as store:
            store.create_run("r1", {"model": "m"}, "inventory.yaml", model="m", tool_version="t")
        yield url


@pytest.fixture
def reader(admin: str) -> Iterator[str]:
    name = f"reader_{uuid.uuid4().hex[:8]}"
    made = tslm("db", "create-reader", name, "--db", admin)
    assert made.returncode == 0, made.stderr
    assert f"TSLM_QUERY_DB='postgresql+psycopg://{name}@" in made.stdout
    yield as_role(admin, name)
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP OWNED BY "{name}"'))
        conn.execute(text(f'DROP ROLE "{name}"'))
    engine.dispose()


def refused(run: subprocess.CompletedProcess) -> str:
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "Traceback" not in out, out
    return out


def test_the_reader_reads(reader: str) -> None:
    run = tslm("query", "SELECT id, status FROM runs", "-f", "json", env={"TSLM_QUERY_DB": reader})
    assert run.returncode == 0, run.stderr
    assert '"id": "r1"' in run.stdout


def test_a_superuser_is_refused_naming_the_role_and_the_fix(admin: str) -> None:
    out = refused(tslm("query", "SELECT 1", "--db", admin))
    assert "refuses to run as PostgreSQL role 'postgres'" in out
    assert "is a superuser" in out and "tslm-fleet db create-reader" in out


def test_a_role_that_can_write_is_refused(admin: str) -> None:
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    name = f"writer_{uuid.uuid4().hex[:8]}"
    with engine.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{name}" LOGIN'))
        conn.execute(text(f'GRANT SELECT, INSERT ON runs TO "{name}"'))
        conn.execute(text(f'GRANT SELECT ON alembic_version TO "{name}"'))
    try:
        out = refused(tslm("query", "SELECT 1", "--db", as_role(admin, name)))
        assert f"role '{name}'" in out and "may write table runs" in out
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{name}"'))
            conn.execute(text(f'DROP ROLE "{name}"'))
        engine.dispose()


def test_set_role_to_the_reader_is_not_enough(admin: str, reader: str) -> None:
    """A superuser session that only SET ROLE to the reader could RESET ROLE."""
    role = make_url(reader).username
    url = make_url(admin).update_query_dict({"options": f"-c role={role}"})
    out = refused(tslm("query", "RESET ROLE", "--db", url.render_as_string(hide_password=False)))
    assert "role 'postgres'" in out and "is a superuser" in out


def test_attacks_through_the_reader_are_refused(admin: str, reader: str, tmp_path: Path) -> None:
    marker = Path("/tmp") / f"tslm-copy-{uuid.uuid4().hex}"
    exported = Path("/tmp") / f"tslm-lo-{uuid.uuid4().hex}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as admin_conn:
        lo = admin_conn.execute(text("SELECT lo_from_bytea(0, 'secret'::bytea)")).scalar()
        admin_pid = admin_conn.execute(text("SELECT pg_backend_pid()")).scalar()
        attacks = {
            "COPY TO PROGRAM": f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
            "lo_export": f"SELECT lo_export({lo}, '{exported}')",
            "pg_terminate_backend": f"SELECT pg_terminate_backend({admin_pid})",
            "SET ROLE postgres": "SET ROLE postgres",
            "set_config role": "SELECT set_config('role', 'postgres', false)",
            "RESET ROLE, then write": "RESET ROLE; DELETE FROM runs",
            "write": "DELETE FROM runs",
        }
        outcomes = {}
        for name, sql in attacks.items():
            run = tslm("query", sql, env={"TSLM_QUERY_DB": reader})
            outcomes[name] = refused(run).strip().splitlines()[0]
        # nothing happened: no program ran, no file written, the admin's session lives on
        assert not marker.exists() and not exported.exists()
        assert admin_conn.execute(text("SELECT pg_backend_pid()")).scalar() == admin_pid
        assert admin_conn.execute(text("SELECT count(*) FROM runs")).scalar() == 1
        admin_conn.execute(text(f"SELECT lo_unlink({lo})"))
    engine.dispose()
    report = "\n".join(f"{name}: {line}" for name, line in outcomes.items())
    print(report)
    (tmp_path / "attacks.txt").write_text(report)
    assert (
        "must be superuser or have privileges of the pg_execute_server_program"
        in (outcomes["COPY TO PROGRAM"])
    )
    assert "permission denied for function lo_export" in outcomes["lo_export"]
    assert "to terminate" in outcomes["pg_terminate_backend"]
    assert 'permission denied to set role "postgres"' in outcomes["SET ROLE postgres"]
    assert 'permission denied to set role "postgres"' in outcomes["set_config role"]
    assert "multiple commands" in outcomes["RESET ROLE, then write"]
    assert "read-only transaction" in outcomes["write"]


def test_create_reader_refuses_bad_names_and_existing_roles(admin: str) -> None:
    out = refused(tslm("db", "create-reader", 'x"; DROP TABLE runs; --', "--db", admin))
    assert "is not valid" in out
    out = refused(tslm("db", "create-reader", "postgres", "--db", admin))
    assert "exists already" in out


def test_the_password_comes_from_the_environment_and_is_never_shown(admin: str) -> None:
    name = f"reader_{uuid.uuid4().hex[:8]}"
    made = tslm(
        "db",
        "create-reader",
        name,
        "--password-env",
        "READER_PW",
        "--db",
        admin,
        env={"READER_PW": "s3cret-planted"},
    )
    assert made.returncode == 0, made.stderr
    assert "s3cret-planted" not in made.stdout + made.stderr and "PASSWORD ***" in made.stdout
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = :n"), {"n": name}
        ).scalar()
        conn.execute(text(f'DROP OWNED BY "{name}"'))
        conn.execute(text(f'DROP ROLE "{name}"'))
    engine.dispose()
    missing = refused(tslm("db", "create-reader", "r2", "--password-env", "NOPE", "--db", admin))
    assert "NOPE" in missing and "not set" in missing
