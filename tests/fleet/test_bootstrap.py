"""bootstrap over SSH: a fake device (its own user and sshd) gets a venv made by its system
Python and CPU-only torch, online from stand-in indexes on loopback, then from a wheelhouse
with the indexes gone."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.bootstrap import bootstrap_device
from orchestrator.inventory import load_inventory
from orchestrator.transport import open_transport
from orchestrator.wheelhouse import build_wheelhouse, plan_wheelhouse
from testbed import prerequisites
from testbed.package_index import (
    DEVICE_REQUIREMENTS,
    PackageIndexServer,
    build_standin_indexes,
    isolated_pip_env,
)

pytestmark = [pytest.mark.fleet, pytest.mark.slow, pytest.mark.timeout(400)]

SYSTEM_PYTHON = "/usr/bin/python3"
REQS = list(DEVICE_REQUIREMENTS)
QUIET = ["--disable-pip-version-check", "--no-input", "--quiet"]


@pytest.fixture
def system_python() -> str:
    """The Debian system Python with venv support (Bookworm's 3.11, as on a Pi)."""
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import ensurepip, venv"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        prerequisites.missing(
            f"{SYSTEM_PYTHON} with venv support is missing (make system-packages)"
        )
    return SYSTEM_PYTHON


@pytest.fixture
def index(tmp_path: Path) -> Iterator[PackageIndexServer]:
    build_standin_indexes(tmp_path / "index", arches=("x86_64",))
    with PackageIndexServer(tmp_path / "index") as server:
        yield server


def test_bootstrap_over_ssh_online_then_from_a_wheelhouse(
    fleet_factory, index: PackageIndexServer, system_python: str, tmp_path: Path
) -> None:
    fleet = fleet_factory(
        1,
        overrides={
            "pi4": {
                "python": "~/.tslm/venv/bin/python3",
                "base_python": system_python,
                "torch_index": index.url("torch-cpu"),
            }
        },
    )
    device = load_inventory(fleet.inventory_path)["pi4"]
    home = str(fleet["pi4"].home)
    python, venv = f"{home}/.tslm/venv/bin/python3", f"{home}/.tslm/venv"

    # online: the venv is made by the system Python, torch comes from the torch index
    mark = index.served.mark()
    with open_transport(device) as t:
        report = bootstrap_device(t, requirements=REQS, index_url=index.url("pypi"))
        cfg = t.run(["cat", f"{venv}/pyvenv.cfg"]).stdout
        owner = t.run(["stat", "-c", "%U", python]).stdout.strip()
    assert report.created and report.venv == venv and report.torch == "2.13.0+cpu"
    assert report.pip_calls == (
        (python, "-m", "pip", "install", *QUIET, "--only-binary=:all:",
         "--index-url", index.url("torch-cpu"), "torch==2.13.0"),
        (python, "-m", "pip", "install", *QUIET, "--index-url", index.url("pypi"), *REQS),
    )  # fmt: skip
    assert "home = /usr/bin" in cfg and owner == fleet["pi4"].user
    assert "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl" in index.served.wheels_from(
        "torch-cpu", mark
    )
    assert index.served.wheels_from("pypi", mark) == [
        "numpy-2.3.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "pyserial-3.5-py2.py3-none-any.whl",
        "safetensors-0.6.2-cp38-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    ]

    # offline: a wheelhouse built here, the device's venv removed, the indexes stopped
    plan = plan_wheelhouse(
        "x86_64",
        tmp_path / "wheels",
        requirements=REQS,
        torch_index=index.url("torch-cpu"),
        index_url=index.url("pypi"),
    )
    wheels = build_wheelhouse(plan, _isolated_pip)
    index.stop()
    with open_transport(device) as t:
        t.remove(venv, recursive=True)
        offline = bootstrap_device(t, wheelhouse=tmp_path / "wheels", requirements=REQS)
        torch = t.run([python, "-c", "import torch; print(torch.STANDIN)"]).stdout.strip()
    pushed = f"{home}/.tslm/wheelhouse"
    assert offline.created and offline.wheelhouse_pushed == len(wheels.wheels)
    assert offline.pip_calls == (
        (python, "-m", "pip", "install", *QUIET, "--no-index", "--find-links", pushed, *REQS),
    )
    assert torch == "torch 2.13.0+cpu cp311-cp311-manylinux_2_28_x86_64"


def _isolated_pip(argv) -> tuple[int, str]:
    out = subprocess.run(list(argv), capture_output=True, text=True, env=isolated_pip_env())
    return out.returncode, out.stdout + out.stderr
