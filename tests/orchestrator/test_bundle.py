"""The agent bundle: deterministic zipapp, runs ``info`` and a whole job on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from orchestrator.bundle import archive_bytes, build_bundle
from testbed.models import save_tiny_model
from tests.agent.conftest import MODEL_REL, assert_gapless, job_dict, parse_lines


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return build_bundle(tmp_path_factory.mktemp("bundles"))


def test_the_bundle_is_deterministic_and_cached(bundle, tmp_path: Path) -> None:
    assert bundle.path.name == f"tslm-agent-{bundle.sha256[:12]}.pyz"
    again = build_bundle(tmp_path)
    assert (again.sha256, again.path.name) == (bundle.sha256, bundle.path.name)
    mtime = again.path.stat().st_mtime_ns
    assert build_bundle(tmp_path).path.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert archive_bytes() == bundle.path.read_bytes()
    with zipfile.ZipFile(bundle.path) as zf:
        names = zf.namelist()
        assert names[0] == "__main__.py" and names[1:] == sorted(names[1:])
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert {
        "agent/cli.py",
        "agent/runner.py",
        "tasks/models.py",
        "tasks/data/prompts.jsonl",
    } <= set(names)
    assert not any(
        "__pycache__" in n or n.startswith(("orchestrator/", "db/", "tests/")) for n in names
    )


def _run_bundle(bundle_path: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, str(bundle_path), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_bundle_runs_info_and_a_job(bundle, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    save_tiny_model(workdir / MODEL_REL)
    proc = _run_bundle(bundle.path, "--workdir", str(workdir), "info", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["bundle_sha256"] == bundle.sha256

    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(job_dict(workdir, repetitions=1)))
    proc = _run_bundle(bundle.path, "--workdir", str(workdir), "run", str(spec), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    events = parse_lines(proc.stdout)
    assert_gapless(events)
    assert events[0]["bundle_sha256"] == bundle.sha256  # the agent ran from the archive
    assert events[-1]["status"] == "ok" and events[-1]["queries"] == 6
