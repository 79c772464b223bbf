"""The result and db commands end to end, through the real CLI."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db.engine import head_revision
from db.store import open_store
from orchestrator.cli import build_app
from tests.db.test_queries import REQUIRED_KEYS, fill

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def filled(db_url: str) -> str:
    with open_store(db_url) as store:
        fill(store)
        store.finish_run("run-1", "ok")
    return db_url


def cli(*args: str) -> str:
    result = CliRunner().invoke(build_app(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_results_json_has_the_contract_keys(filled: str) -> None:
    rows = json.loads(cli("results", "--db", filled, "--format", "json"))
    assert len(rows) == 4 and all(row.keys() >= REQUIRED_KEYS for row in rows)
    assert {
        r["device"]
        for r in json.loads(cli("results", "--db", filled, "--device", "pi4", "-f", "json"))
    } == {"pi4"}


def test_results_table_csv_markdown(filled: str) -> None:
    table = cli("results", "--db", filled)
    assert "tt-r8" in table and "±" in table
    rows = list(csv.DictReader(io.StringIO(cli("results", "--db", filled, "-f", "csv"))))
    assert len(rows) == 4 and rows[0]["run_id"] == "run-1"
    assert cli("results", "--db", filled, "-f", "markdown").startswith("| run |")
    assert float(rows[0]["decode_s_per_token"]) == pytest.approx(0.018)
    assert int(rows[0]["peak_rss_bytes"]) == 400 * 2**20
    assert "decode_ms" in table and "rss_mb" in table and "419" in table


def test_compare_defaults_to_the_latest_run(filled: str) -> None:
    md = cli("compare", "--db", filled, "-f", "markdown")
    assert "**run run-1**" in md and "pi5 latency_s" in md
    records = json.loads(cli("compare", "--db", filled, "--by", "device", "-f", "json"))
    assert [r["device"] for r in records] == ["pi4", "pi5"]
    assert records[0]["dense"]["compression_ratio"] == 1.0
    assert records[0]["dense"]["peak_rss_bytes"] == 400 * 2**20
    assert records[0]["dense"]["decode_s_per_token"] == pytest.approx(0.018)
    table = cli("compare", "--db", filled)
    assert "decode_ms/tok" in table and "peak_rss_mb" in table and "419" in table


def test_runs_query_and_export(filled: str, reader_url: str, tmp_path: Path) -> None:
    assert "run-1" in cli("runs", "--db", filled)
    out = json.loads(
        cli("query", "SELECT COUNT(*) AS n FROM queries", "--db", reader_url, "-f", "json")
    )
    assert out == [{"n": 96}]
    assert "wrote" in cli(
        "export", "--run", "run-1", "--out", str(tmp_path / "r.csv"), "--db", filled
    )
    lines = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(lines) == 96 and {"device", "variant", "latency_s", "energy_j"} <= lines[0].keys()
    cli("export", "--run", "run-1", "--out", str(tmp_path / "r.json"), "--db", filled)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["run"]["run_id"] == "run-1" and len(doc["trials"]) == 4
    assert len(doc["trials"][0]["queries"]) == 24 and doc["trials"][0]["windows"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_write_through_query_is_a_clear_error(filled: str, reader_url: str) -> None:
    proc = run_cli("query", "DELETE FROM runs", "--db", reader_url)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: the database refused a write")
    assert "Traceback" not in proc.stderr
    assert json.loads(run_cli("runs", "--db", filled, "-f", "json").stdout)[0]["trials"] == 4


def test_user_errors_are_messages(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    for args in (
        ["results", "--db", missing],
        ["results", "--since", "yesterday"],
        ["export", "--run", "x", "--out", "x.parquet", "--db", missing],
    ):
        proc = run_cli(*args)
        assert proc.returncode == 2 and proc.stderr.startswith("error: "), args
        assert "Traceback" not in proc.stderr


def test_db_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert "not created yet" in cli("db", "path", "--db", url)
    head = head_revision()  # the newest file of db/migrations/versions
    assert f"(empty) -> {head}" in cli("db", "upgrade", "--db", url)
    assert f"already at revision {head}" in cli("db", "upgrade", "--db", url)
    assert cli("db", "current", "--db", url).strip() == f"{head} (head)"
    assert str(tmp_path / "fresh.db") in cli("db", "path", "--db", url)
