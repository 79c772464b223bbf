"""``bootstrap`` and ``wheelhouse``: a device's Python environment, online or offline.

:func:`bootstrap_device` reads the device's Python (the venv named by ``python``; when that
does not run yet, the venv is created with ``base_python``, the device's system Python,
``/usr/bin/python3`` on Raspberry Pi OS Bookworm), then installs the agent's packages:

- online, in two pip calls: torch from the device's torch index, then the others
  (:func:`orchestrator.wheels.install_calls`);
- offline, from a wheelhouse pushed to the device first, with ``--no-index``.

Afterwards it reads back the installed torch and refuses a venv that holds CUDA packages.
A wheelhouse is built by :mod:`orchestrator.wheelhouse`.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from orchestrator.deploy import DeployProgress, RemoteLayout, deploy_files, items_for_directory
from orchestrator.doctor import MIN_PYTHON
from orchestrator.transport.base import Transport
from orchestrator.transport.errors import RemoteCommandError
from orchestrator.wheels import (
    CUDA_ONLY,
    PackageInstallError,
    PipCall,
    check_wheelhouse,
    default_torch_index,
    device_requirements,
    explain_pip_failure,
    install_calls,
    offline_install_call,
    split_torch,
    torch_wheel_for,
)
from tasks.errors import ConfigError

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
