"""``bootstrap`` and ``wheelhouse``: a device's Python environment, online or offline.

:func:`bootstrap_device` reads the device's Python (the venv named by ``python``; when that
does not run yet, the venv is created with ``base_python``, the device's system Python,
``/usr/bin/python3`` on Raspberry Pi OS Bookworm), then installs the agent's packages:

- online, in two pip calls: torch from the device's torch index, then the others
  (:func:`orchestrator.wheels.install_calls`);
- offline, from a wheelhouse pushed to the device first, with ``--no-index``.

Afterwards it reads back the installed torch and refuses a venv that holds CUDA packages.
:func:`build_wheelhouse` downloads such a wheelhouse on the controller in two pip calls of
the same split (:func:`orchestrator.wheels.download_torch_call`, then the others).
"""

from __future__ import annotations

import json
import posixpath
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from orchestrator.deploy import DeployProgress, RemoteLayout, deploy_files, items_for_directory
from orchestrator.transport.base import Transport
from orchestrator.wheels import (
    CUDA_ONLY,
    PackageInstallError,
    PipCall,
    WheelFile,
    check_wheelhouse,
    default_torch_index,
    device_requirements,
    download_others_call,
    download_torch_call,
    explain_pip_failure,
    install_calls,
    list_wheels,
    machine_name,
    offline_install_call,
    split_torch,
)
from tasks.errors import ConfigError, RemoteCommandError

#: the oldest Python the agent runs on (Raspberry Pi OS Bookworm ships 3.11)
MIN_PYTHON = (3, 11)
PIP_TIMEOUT_S = 3600.0
PROBE_TIMEOUT_S = 60.0
_PROBE = (
    "import json, platform, sys; print(json.dumps({'machine': platform.machine(), "
    "'python': '%d.%d' % sys.version_info[:2]}))"
)
_INSTALLED = (
    "import json, importlib.metadata as m; print(json.dumps("
    "{(d.metadata['Name'] or '?'): d.version for d in m.distributions()}))"
)


@dataclass(frozen=True)
class PythonInfo:
    """What a Python on the device says about itself."""

    machine: str
    version: str

    @property
    def too_old(self) -> bool:
        return tuple(int(p) for p in self.version.split(".")) < MIN_PYTHON


@dataclass(frozen=True)
class BootstrapReport:
    """What :func:`bootstrap_device` did on one device."""

    device: str
    venv: str
    created: bool
    requirements: tuple[str, ...]
    wheelhouse_pushed: int
    duration_s: float
    python_version: str = ""
    machine: str = ""
    #: the installed torch (e.g. ``2.13.0+cpu``) and where it came from
    torch: str = ""
    torch_source: str = ""
    #: the pip commands run, in order (argument lists)
    pip_calls: tuple[tuple[str, ...], ...] = ()


def bootstrap_device(
    transport: Transport,
    *,
    wheelhouse: Path | None = None,
    requirements: Sequence[str] | None = None,
    index_url: str | None = None,
    base_python: str | None = None,
    progress: DeployProgress | None = None,
) -> BootstrapReport:
    """Create the venv that holds the device's ``python`` and install the agent's packages.

    ``base_python`` overrides the device's ``base_python``; ``index_url`` is the index of
    every package but torch (torch comes from the device's ``torch_index``). With
    ``wheelhouse`` the wheels are pushed first and installed without any index.
    """
    started = time.monotonic()
    device = transport.device
    python = _venv_python(transport)
    venv = posixpath.dirname(posixpath.dirname(python))
    info, created = _ensure_venv(transport, python, venv, base_python or device.base_python)
    reqs = list(requirements) if requirements is not None else device_requirements()
    pushed = 0
    if wheelhouse is not None:
        call, pushed = _offline_call(transport, python, reqs, wheelhouse, info, progress)
        calls = [call]
    else:
        torch_index = device.torch_index or default_torch_index(info.machine, device.name)
        calls = install_calls(
            python,
            reqs,
            torch_index=torch_index,
            torch_version=device.torch_version,
            index_url=index_url,
        )
    for call in calls:
        _run_pip(transport, call, info)
    torch = _installed_torch(transport, python, venv)
    return BootstrapReport(
        device=device.name,
        venv=venv,
        created=created,
        requirements=tuple(reqs),
        wheelhouse_pushed=pushed,
        duration_s=time.monotonic() - started,
        python_version=info.version,
        machine=info.machine,
        torch=torch,
        torch_source=calls[0].source,
        pip_calls=tuple(call.argv for call in calls),
    )


def _venv_python(transport: Transport) -> str:
    python = transport.python()
    if "/" not in python:
        raise ConfigError(
            f"{transport.device.name}: `python: {python}` is a bare command; bootstrap needs a "
            "path inside a venv, e.g. ~/.tslm/venv/bin/python3 (the venv is made with "
            "`base_python`)"
        )
    return python


def _probe(transport: Transport, python: str) -> PythonInfo | None:
    """Machine and version of ``python`` on the device; None when it does not run."""
    result = transport.run([python, "-c", _PROBE], check=False, timeout_s=PROBE_TIMEOUT_S)
    if result.exit_code != 0:
        return None
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
        return PythonInfo(machine=str(data["machine"]), version=str(data["python"]))
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _ensure_venv(
    transport: Transport, python: str, venv: str, base_python: str
) -> tuple[PythonInfo, bool]:
    """The venv's Python (created from ``base_python`` when missing) and whether it was made."""
    name = transport.device.name
    info = _probe(transport, python)
    if info is None:
        base = _probe(transport, base_python)
        if base is None:
            raise ConfigError(
                f"{name}: base_python `{base_python}` does not run on the device, so the venv "
                f"{venv} cannot be created",
                hint="install Python 3.11+ with venv support (Raspberry Pi OS: sudo apt install "
                "python3-venv), or set `base_python` in the inventory to the system Python",
            )
        _require_new_enough(name, base_python, base)
        _create_venv(transport, base_python, venv)
        info = _probe(transport, python)
        if info is None:
            raise ConfigError(
                f"{name}: `{base_python} -m venv {venv}` made no {python}",
                hint="`python:` must name bin/python3 inside the venv",
            )
        return info, True
    _require_new_enough(name, python, info)
    return info, False


def _require_new_enough(name: str, python: str, info: PythonInfo) -> None:
    if info.too_old:
        need = ".".join(map(str, MIN_PYTHON))
        raise ConfigError(
            f"{name}: {python} is Python {info.version}; the agent needs {need} or newer",
            hint="Raspberry Pi OS Bookworm ships 3.11: set `base_python` to it (and remove an "
            "older venv)",
        )


def _create_venv(transport: Transport, base_python: str, venv: str) -> None:
    transport.makedirs(posixpath.dirname(venv))
    result = transport.run([base_python, "-m", "venv", venv], check=False, timeout_s=600)
    if result.exit_code != 0:
        raise RemoteCommandError(
            f"{transport.device.name}: `{base_python} -m venv {venv}` failed: "
            f"{(result.stderr or result.stdout).strip()[-300:]}",
            exit_code=result.exit_code,
            stderr=result.stderr,
            hint="install venv support for the system Python (Debian/Raspberry Pi OS: sudo apt "
            "install python3-venv)",
        )


def _offline_call(
    transport: Transport,
    python: str,
    requirements: list[str],
    wheelhouse: Path,
    info: PythonInfo,
    progress: DeployProgress | None,
) -> tuple[PipCall, int]:
    """Check that the wheelhouse fits the device, push it, and return the pip call."""
    device = transport.device
    torch, _ = split_torch(requirements, device.torch_version)
    torch_wheel_for(
        check_wheelhouse(wheelhouse), info.machine, info.version, torch, where=device.name
    )
    layout = RemoteLayout(transport.workdir())
    report = deploy_files(
        transport, items_for_directory(wheelhouse, layout.wheelhouse_dir), progress=progress
    )
    folder = layout.absolute(layout.wheelhouse_dir)
    call = offline_install_call(python, requirements, folder, torch_version=device.torch_version)
    return call, len(report.pushed)


def _run_pip(transport: Transport, call: PipCall, info: PythonInfo) -> None:
    result = transport.run(list(call.argv), check=False, timeout_s=PIP_TIMEOUT_S)
    if result.exit_code != 0:
        raise explain_pip_failure(
            call,
            f"{result.stdout}\n{result.stderr}",
            where=transport.device.name,
            machine=info.machine,
            python_version=info.version,
        )


def _installed_torch(transport: Transport, python: str, venv: str) -> str:
    """The torch version installed in the venv; refuses a venv holding CUDA packages."""
    name = transport.device.name
    result = transport.run([python, "-c", _INSTALLED], check=False, timeout_s=PROBE_TIMEOUT_S)
    try:
        installed = {canonicalize_name(k): v for k, v in json.loads(result.stdout).items()}
    except (ValueError, AttributeError) as exc:
        raise RemoteCommandError(
            f"{name}: cannot list the packages in {venv}: {result.stderr.strip()[-300:]}",
            exit_code=result.exit_code,
            stderr=result.stderr,
        ) from exc
    cuda = sorted(n for n in installed if CUDA_ONLY.fullmatch(n))
    if cuda:
        raise PackageInstallError(
            f"{name}: {venv} holds CUDA packages: {', '.join(cuda)} (torch "
            f"{installed.get('torch', 'missing')})",
            hint="a CUDA build of torch was there before, or the device's pip.conf adds an "
            f"index that serves one: remove the venv (`rm -r {venv}` on the device) and run "
            f"`tslm-fleet bootstrap --devices {name}` again",
        )
    return installed.get("torch", "")


def torch_wheel_for(
    wheels: Sequence[WheelFile], machine: str, python_version: str, torch: str, *, where: str
) -> WheelFile:
    """The wheelhouse's torch wheel that ``torch`` (a requirement) selects for a device."""
    specifier = Requirement(torch).specifier
    torches = [w for w in wheels if w.name == "torch"]
    for wheel in torches:
        if wheel.fits(machine, python_version) and specifier.contains(
            wheel.version, prereleases=True
        ):
            return wheel
    held = ", ".join(w.path.name for w in torches) or "none"
    raise PackageInstallError(
        f"{where}: the wheelhouse has no wheel of {torch} for Python {python_version} on "
        f"{machine_name(machine)} (it holds: {held})",
        hint=f"build one with `tslm-fleet wheelhouse --platform {machine_name(machine)} "
        f"--python-version {python_version} -o DIR` (and `--torch-version` when the inventory "
        "sets `torch_version`)",
    )


# --------------------------------------------------------------------------- wheelhouse

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
