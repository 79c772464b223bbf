"""`tslm-fleet run` end to end on the `local` device: compress, deploy, agent, database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.models import save_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("model") / "tiny-llama"
    save_tiny_model(target)
    return target


def cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_full_run_on_the_local_device(tmp_path: Path, tiny_llama: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(
        f"devices:\n  local: {{transport: local, workdir: {tmp_path / 'work'}, "
        "meter: {kind: none}}\n"
    )
    (tmp_path / "exp.yaml").write_text(
        f"model: {tiny_llama}\n"
        "variants: [dense, 'tt:rank=2']\n"
        "tasks:\n  - generate: {num_queries: 2, max_new_tokens: 3}\n  - perplexity: {}\n"
        "repetitions: 2\nwarmup: 1\nidle_seconds: 0.5\n"
    )
    db = f"sqlite:///{tmp_path / 'results.db'}"
    run = cli(
        "run",
        "--devices",
        "local",
        "--experiment",
        "exp.yaml",
        "--no-dashboard",
        "--db",
        db,
        "--cache-dir",
        str(tmp_path / "cache"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert "tt:rank=2" in run.stdout and "dense" in run.stdout

    rows = json.loads(cli("results", "--db", db, "--format", "json", cwd=tmp_path).stdout)
    got = {(r["variant"], r["task"]): r for r in rows}
    assert set(got) == {
        ("dense", "generate"),
        ("dense", "perplexity"),
        ("tt:rank=2", "generate"),
        ("tt:rank=2", "perplexity"),
    }
    for row in rows:
        assert row["status"] == "ok"
        assert row["device"] == "local"
        assert "no-meter" in row["flags"]
        assert row["energy_j_per_query_median"] is None  # never invented without a meter
    assert got[("dense", "generate")]["n_queries"] == 4  # 2 queries x 2 repetitions
    assert got[("tt:rank=2", "generate")]["compression_ratio"] > 1.0
    assert got[("dense", "perplexity")]["perplexity"] > 1.0

    # every event of every trial stored exactly once, seq 1..N without gaps
    out = cli(
        "query",
        "--db",
        db,
        "--format",
        "json",
        "SELECT trial_id, COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi "
        "FROM events GROUP BY trial_id",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    for trial in json.loads(out.stdout):
        assert trial["lo"] == 1 and trial["hi"] == trial["n"]


def test_unknown_device_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text("devices:\n  local: {transport: local}\n")
    run = cli("run", "--devices", "pi9", "--db", f"sqlite:///{tmp_path / 'r.db'}", cwd=tmp_path)
    assert run.returncode == 2
    assert "pi9" in run.stderr and "local" in run.stderr
    assert "Traceback" not in run.stderr


ITEMS = [
    {"context": "The keeper climbed the", "choices": ["stairs", "sea", "bread"], "gold": 0},
    {"context": "Question: what do bees carry?\nAnswer:", "choices": ["pollen", "soil"], "gold": 0},
    {"context": "The train was", "choices": ["late", "blue", "loud", "wet"], "gold": 1},
]


def test_quality_tasks_on_the_device_and_on_the_controller(tmp_path: Path, tiny_llama) -> None:
    (tmp_path / "inventory.yaml").write_text(
        f"devices:\n  local: {{transport: local, workdir: {tmp_path / 'work'}, "
        "meter: {kind: none}}\n"
    )
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    (tmp_path / "exp.yaml").write_text(
        f"model: {tiny_llama}\n"
        "variants: [dense, 'tt:rank=2']\n"
        "tasks:\n"
        "  - choice: {data: items.jsonl}\n"
        "  - choice: {data: items.jsonl, on: controller}\n"
        "  - last-word: {limit: 3, seed: 4, on: controller}\n"
        "repetitions: 1\nwarmup: 0\nidle_seconds: 0\n"
    )
    db = f"sqlite:///{tmp_path / 'results.db'}"
    run = cli(
        "run",
        "--devices",
        "local",
        "--experiment",
        "exp.yaml",
        "--no-dashboard",
        "--db",
        db,
        "--cache-dir",
        str(tmp_path / "cache"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = json.loads(cli("results", "--db", db, "--format", "json", cwd=tmp_path).stdout)
    got = {(r["variant"], r["task"], r["device"]): r for r in rows}
    assert set(got) == {
        (v, t, d)
        for v in ("dense", "tt:rank=2")
        for t, d in (("choice", "local"), ("choice", "controller"), ("last-word", "controller"))
    }
    for variant in ("dense", "tt:rank=2"):
        board, controller = (
            got[(variant, "choice", "local")],
            got[(variant, "choice", "controller")],
        )
        assert board["status"] == controller["status"] == "ok"
        assert board["n_queries"] == controller["n_queries"] == 1  # 3 items in one query
        # the same artifact and agent give the same decisions on either side
        assert board["scores"] == controller["scores"]
        assert board["scores"]["items"] == 3 and 0 <= board["scores"]["acc"] <= 1
        assert "acc_norm_stderr" in board["scores"]
        assert got[(variant, "last-word", "controller")]["scores"]["items"] == 3
    table = cli("compare", "--db", db, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "controller" in table.stdout and "acc" in table.stdout
    ids = cli(
        "query",
        "--db",
        db,
        "--format",
        "json",
        "SELECT e.data FROM events e JOIN trials t ON t.id = e.trial_id "
        "WHERE e.type = 'score' AND t.task = 'last-word' AND t.variant = 'dense'",
        cwd=tmp_path,
    )
    details = [
        json.loads(r["data"]) if isinstance(r["data"], str) else r["data"]
        for r in json.loads(ids.stdout)
    ]
    acc = next(d for d in details if d["metric"] == "acc")
    assert len(acc["details"]["doc_ids"]) == 3 and "not comparable" in acc["details"]["note"]
