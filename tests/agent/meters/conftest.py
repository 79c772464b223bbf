"""Shared pieces of the meter tests: reading files the way a non-root user does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def run_without_file_override(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` the way a non-root user reads files: without CAP_DAC_OVERRIDE.

    As root, file modes do not stop reads; dropping the capabilities makes mode 0000
    refuse them as the kernel does for the agent's user.
    """
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
        caps = "-dac_override,-dac_read_search"
        command = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
