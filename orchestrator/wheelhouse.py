"""``wheelhouse``: a folder of wheels that a device installs from with no index at all.

Two pip calls of the split that ``bootstrap`` makes online: torch (and its dependencies)
from the torch index, then the other packages from the usual index, with torch given as
the wheel file the first call fetched, so that no other build of torch can come in. The
folder is then checked: a torch wheel for the platform and no CUDA-only package.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from orchestrator.wheels import (
    PipCall,
    check_wheelhouse,
    default_torch_index,
    device_requirements,
    download_others_call,
    download_torch_call,
    explain_pip_failure,
    list_wheels,
    split_torch,
    torch_wheel_for,
)
from tasks.errors import ConfigError

#: runs one pip command on this machine: ``(argv) -> (exit status, output)``
PipRunner = Callable[[Sequence[str]], tuple[int, str]]


@dataclass(frozen=True)
class WheelhouseReport:
    """What :func:`build_wheelhouse` left in the folder."""

    folder: Path
    wheels: tuple[str, ...]
    torch_wheel: str
    pip_calls: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class WheelhousePlan:
    """The settings of one wheelhouse build, resolved to their defaults."""

    platform: str
    out: Path
    python_version: str
    torch: str
    others: tuple[str, ...]
    torch_index: str
    index_url: str | None
    python: str

    @property
    def torch_wheel_pattern(self) -> str:
        """File name pattern of the torch wheel step 1 fetches (for ``--dry-run``)."""
        specs = list(Requirement(self.torch).specifier)
        exact = len(specs) == 1 and specs[0].operator == "=="
        return f"torch-{specs[0].version if exact else ''}*.whl"

    def torch_call(self) -> PipCall:
        """Step 1: torch and its dependencies from the torch index."""
        return download_torch_call(
            self.python,
            self.platform,
            self.out,
            torch=self.torch,
            torch_index=self.torch_index,
            python_version=self.python_version,
        )

    def others_call(self, torch_wheel: Path) -> PipCall:
        """Step 2: the other packages from the usual index, torch given as its wheel file."""
        return download_others_call(
            self.python,
            self.platform,
            self.out,
            torch_wheel=torch_wheel,
            others=self.others,
            index_url=self.index_url,
            python_version=self.python_version,
        )


def plan_wheelhouse(
    platform: str,
    out: Path,
    *,
    python_version: str = "3.11",
    requirements: Sequence[str] | None = None,
    torch_index: str | None = None,
    torch_version: str | None = None,
    index_url: str | None = None,
    python: str | None = None,
) -> WheelhousePlan:
    """Resolve a wheelhouse build's settings (torch index and pin by default from the platform)."""
    torch, others = split_torch(
        list(requirements) if requirements is not None else device_requirements(), torch_version
    )
    plan = WheelhousePlan(
        platform=platform,
        out=Path(out),
        python_version=python_version,
        torch=torch,
        others=tuple(others),
        torch_index=torch_index or default_torch_index(platform, "wheelhouse"),
        index_url=index_url,
        python=python or sys.executable,
    )
    plan.torch_call()  # validates the platform name
    return plan


def build_wheelhouse(plan: WheelhousePlan, run_pip: PipRunner | None = None) -> WheelhouseReport:
    """Download the wheels of ``plan`` into its folder and check what arrived."""
    run = run_pip or run_pip_teeing
    plan.out.mkdir(parents=True, exist_ok=True)
    first = plan.torch_call()
    _download(first, plan, run)
    torch_wheel = torch_wheel_for(
        list_wheels(plan.out), plan.platform, plan.python_version, plan.torch, where="this machine"
    )
    second = plan.others_call(torch_wheel.path)
    _download(second, plan, run)
    wheels = check_wheelhouse(plan.out)
    return WheelhouseReport(
        folder=plan.out,
        wheels=tuple(w.path.name for w in wheels),
        torch_wheel=torch_wheel.path.name,
        pip_calls=(first.argv, second.argv),
    )


def _download(call: PipCall, plan: WheelhousePlan, run: PipRunner) -> None:
    code, output = run(call.argv)
    if code != 0:
        raise explain_pip_failure(
            call,
            output,
            where="this machine",
            machine=plan.platform,
            python_version=plan.python_version,
            wheelhouse=True,
        )


def run_pip_teeing(argv: Sequence[str]) -> tuple[int, str]:
    """Run pip here, echoing its output as it comes and keeping it for error messages."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise ConfigError(f"cannot run pip ({argv[0]}): {exc}") from exc
    kept: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        kept.append(line)
    return proc.wait(), "".join(kept[-200:])
