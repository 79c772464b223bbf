"""Fixtures of the results-database tests: every test taking ``db_url`` runs against
SQLite and against PostgreSQL (a fresh database on the session's throwaway server)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from db.store import Store, open_store
from testbed.postgres import scratch_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a scratch PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
        return
    admin_url = request.getfixturevalue("postgres_url")
    with scratch_database(admin_url, f"tslm_{uuid.uuid4().hex[:12]}") as url:
        yield url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated, writable store."""
    with open_store(db_url) as s:
        yield s


@pytest.fixture
def reader_url(store: Store) -> Iterator[str]:
    """The URL ``tslm-fleet query`` may use on ``store``: on PostgreSQL, a role made by
    ``db.roles.create_reader`` (dropped afterwards); on SQLite, the file itself."""
    if store.engine.dialect.name != "postgresql":
        yield store.url
        return
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from db.roles import create_reader

    name = f"reader_{uuid.uuid4().hex[:8]}"
    create_reader(store.engine, name)
    try:
        yield make_url(store.url).set(username=name).render_as_string(hide_password=False)
    finally:
        with store.engine.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{name}"'))
            conn.execute(text(f'DROP ROLE "{name}"'))
            conn.commit()


def make_trial(
    store: Store,
    *,
    run_id: str = "run-1",
    device: str = "pi5",
    variant: str = "dense",
    task: str = "generate",
    method: str = "dense",
    ratio: float | None = None,
    meter_kind: str = "pi5-pmic",
) -> int:
    """A run, device, artifact and trial; returns the trial id."""
    store.upsert_device(device, f"{device}.local", None, "ssh", meter_kind)
    manifest = {"model": "smollm2-135m", "method": method}
    if ratio is not None:
        manifest["compression_ratio"] = ratio
    artifact_id = store.register_artifact(manifest)
    store.create_run(run_id, {"devices": [device]}, "inventory.yaml", model="smollm2-135m")
    return store.create_trial(run_id, device, variant, task, artifact_id, {"max_new_tokens": 16})
