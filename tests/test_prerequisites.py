"""TSLM_STRICT_SKIPS=1 (set by .ci/run) turns a missing prerequisite into a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DEMO = """
from testbed import prerequisites


def test_needs_sshd():
    prerequisites.missing("OpenSSH server (/usr/sbin/sshd) is missing")
"""


def run_demo(tmp_path: Path, strict: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_demo.py").write_text(DEMO)
    env = {k: v for k, v in os.environ.items() if k != "TSLM_STRICT_SKIPS"}
    env["PYTHONPATH"] = str(ROOT)
    if strict is not None:
        env["TSLM_STRICT_SKIPS"] = strict
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_prerequisite_skips_locally(tmp_path: Path) -> None:
    for value in (None, "0"):
        run = run_demo(tmp_path, value)
        assert run.returncode == 0, run.stdout
        assert "1 skipped" in run.stdout and "sshd) is missing" in run.stdout


def test_strict_skips_fail_naming_the_prerequisite(tmp_path: Path) -> None:
    run = run_demo(tmp_path, "1")
    assert run.returncode == 1, run.stdout
    assert "1 failed" in run.stdout
    assert "prerequisite missing" in run.stdout and "/usr/sbin/sshd) is missing" in run.stdout


def test_ci_sets_strict_skips() -> None:
    assert "export TSLM_STRICT_SKIPS=1" in (ROOT / ".ci" / "run").read_text()
