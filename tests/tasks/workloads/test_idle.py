"""The ``idle`` task: quiet intervals adding up to its duration, measured like queries,
in an agent process that never imports torch or transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.errors import TaskError
from tasks.workloads import get_task, needs_model

ROOT = Path(__file__).resolve().parents[3]

RUN_IDLE_JOB = r"""
import io, json, sys
from agent.jobs import Workdir, claim_job
from agent.journal import read_events
from agent.protocol import JobSpec
from agent.runner import run_job

workdir = Workdir.open(sys.argv[1])
spec = JobSpec.from_dict(json.loads(sys.argv[2]))
paths, locks = claim_job(workdir, spec)
status = run_job(spec, workdir, paths, locks, io.StringIO())
events = [e.to_dict() for e in read_events(paths.journal)]
heavy = sorted(m for m in ("torch", "transformers", "numpy") if m in sys.modules)
print(json.dumps({"status": status, "events": events, "heavy": heavy}))
"""


def idle_job(seconds: float, query_seconds: float) -> dict:
    return {
        "spec_version": 1,
        "job_id": "idle-1",
        "run_id": "run-1",
        # a model that is not there: the idle task never looks at it
        "model": {"path": "models/absent.gguf", "sha256": "0" * 64, "name": "absent"},
        "artifact": None,
        "variant": "dense",
        "tasks": [{"name": "idle", "params": {"seconds": seconds, "query_seconds": query_seconds}}],
        "repetitions": 2,
        "warmup": 3,
        "idle_seconds": 0.1,
        "window": {"min_fresh_samples": 3, "min_seconds": 0.0},
        "threads": None,
        "meter": {"kind": "none"},
    }


def test_an_idle_job_imports_neither_torch_nor_transformers(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", RUN_IDLE_JOB, str(tmp_path / "wd"), json.dumps(idle_job(0.5, 0.2))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["status"] == "ok"
    assert out["heavy"] == []
    events = out["events"]
    phases = [e["phase"] for e in events if e["type"] == "phase"]
    assert "loading" not in phases and "warmup" not in phases
    queries = [e for e in events if e["type"] == "query"]
    assert [(q["rep"], q["index"]) for q in queries] == [(r, i) for r in (0, 1) for i in range(3)]
    # 0.2 + 0.2 + 0.1 s of quiet per repetition
    assert [round(q["latency_s"], 1) for q in queries[:3]] == [0.2, 0.2, 0.1]
    scores = [e for e in events if e["type"] == "score" and e["metric"] == "idle_seconds"]
    assert len(scores) == 2 and all(0.5 <= s["value"] < 0.6 for s in scores)


def test_the_idle_task_counts_its_intervals_and_checks_its_parameters() -> None:
    task = get_task("idle")
    assert not needs_model("idle") and needs_model("generate")
    assert task.parse_params({"seconds": "10", "query_seconds": "1"}).num_queries == 10
    assert task.parse_params({"seconds": 2.5, "query_seconds": 1}).num_queries == 3
    assert task.estimate_queries({"seconds": 30}) == 30
    with pytest.raises(TaskError, match="seconds"):
        task.parse_params({"seconds": 0})
    with pytest.raises(TaskError, match="unknown parameter"):
        task.parse_params({"duration": 3})
