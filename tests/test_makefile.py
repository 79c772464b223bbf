"""The Makefile installs system packages; tests never do, and the stamp tells the truth."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("dpkg-query") is None,
    reason="needs make and dpkg-query",
)


def system_packages(tmp_path: Path, packages: str) -> subprocess.CompletedProcess:
    installed = tmp_path / "installed"
    installed.touch()  # newer than pyproject.toml: the Python set-up is not re-run
    return subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(ROOT),
            "system-packages",
            f"SYSTEM_PACKAGES={packages}",
            "INSTALL_SYSTEM_PACKAGES=no",
            f"STAMP={installed}",
            f"SYSSTAMP={tmp_path / 'system-packages'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_stamp_while_a_package_is_missing(tmp_path: Path) -> None:
    run = system_packages(tmp_path, "coreutils tslm-no-such-package")
    assert run.returncode == 0, run.stderr
    assert "system packages missing: tslm-no-such-package" in run.stdout
    assert not (tmp_path / "system-packages").exists()
    again = system_packages(tmp_path, "coreutils tslm-no-such-package")
    assert "tslm-no-such-package" in again.stdout  # checked again, not skipped by a stamp


def test_the_stamp_is_written_once_everything_is_there(tmp_path: Path) -> None:
    run = system_packages(tmp_path, "coreutils")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "system-packages").exists()


def test_no_test_or_testbed_module_installs_packages() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("tests", "testbed")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "test_makefile.py"
        and any(word in path.read_text() for word in ('"apt-get"', "'apt-get'", '"apt"'))
    ]
    assert offenders == []
