"""`run --resume RUN_ID` with flags that contradict the stored run is refused, naming
the difference (instead of silently measuring the stored experiment)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from db.store import open_store
from orchestrator.experiment import build_experiment, resume_conflicts

STORED = dict(variants=["dense", "tt:ratio=2"], tasks=["generate:num_queries=4"], repetitions=2)


def test_only_the_fields_a_flag_decides_are_compared() -> None:
    stored = build_experiment(**STORED)
    assert resume_conflicts(stored, build_experiment(**STORED), ["--variant", "--task"]) == []
    other = build_experiment(**{**STORED, "variants": ["dense"]})
    (line,) = resume_conflicts(stored, other, ["--variant"])
    assert line == (
        "variants (from --variant): the run has [dense, tt:ratio=2], the flags ask for [dense]"
    )
    # a field no given flag decides is not compared
    assert resume_conflicts(stored, other, ["--repetitions"]) == []
    more = build_experiment(**{**STORED, "queries": 9})
    assert "num_queries: 9" in resume_conflicts(stored, more, ["--queries"])[0]


@pytest.fixture
def stored_run(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "inventory.yaml").write_text(
        f"devices:\n  local: {{transport: local, workdir: {tmp_path / 'work'}}}\n"
    )
    db = f"sqlite:///{tmp_path / 'results.db'}"
    with open_store(db) as store:
        store.create_run(
            "run-1", build_experiment(**STORED).to_dict(), "inventory.yaml", model="default"
        )
    return tmp_path, db


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--variant", "int8"], "variants (from --variant): the run has [dense, tt:ratio=2]"),
        (["--model", "other.gguf"], "model (from --model): the run has default"),
        (["--repetitions", "5"], "repetitions (from --repetitions): the run has 2"),
    ],
)
def test_contradicting_flags_are_refused(
    stored_run: tuple[Path, str], flags: list[str], named: str
) -> None:
    cwd, db = stored_run
    run = cli(cwd, "run", "--devices", "local", "--db", db, "--resume", "run-1", *flags)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--resume run-1: the flags contradict the stored run" in run.stderr
    assert named in run.stderr and "Traceback" not in run.stderr
