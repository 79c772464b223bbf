"""wheelhouse and bootstrap against stand-in package indexes served on loopback.

The ``pypi`` stand-in holds a torch whose requirements are those of PyPI's real Linux
torch (CUDA runtime, ``nvidia-*``, ``triton``); the ``torch-cpu`` stand-in holds the
CPU-only build. Every pip here is real and reads no pip configuration, so the indexes it
sees are exactly those on its command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from orchestrator.bootstrap import bootstrap_device
from orchestrator.inventory import parse_inventory
from orchestrator.transport.local import LocalTransport
from orchestrator.wheelhouse import build_wheelhouse, plan_wheelhouse
from orchestrator.wheels import WHEEL_PLATFORMS, PackageInstallError
from tasks.errors import ConfigError
from testbed.package_index import (
    DEVICE_REQUIREMENTS,
    PackageIndexServer,
    isolated_pip_env,
    served_indexes,
)

REQS = list(DEVICE_REQUIREMENTS)
QUIET = ["--disable-pip-version-check", "--no-input", "--quiet"]
TORCH_DEPS = [
    "filelock-3.20.0-py3-none-any.whl",
    "fsspec-2025.9.0-py3-none-any.whl",
    "jinja2-3.1.6-py3-none-any.whl",
    "markupsafe-3.0.3-cp311-cp311-manylinux_2_17_{a}.manylinux2014_{a}.whl",
    "mpmath-1.3.0-py3-none-any.whl",
    "networkx-3.5-py3-none-any.whl",
    "sympy-1.14.0-py3-none-any.whl",
    "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_{a}.whl",
    "typing_extensions-4.15.0-py3-none-any.whl",
]
OTHERS = [
    "numpy-2.3.4-cp311-cp311-manylinux_2_27_{a}.manylinux_2_28_{a}.whl",
    "pyserial-3.5-py2.py3-none-any.whl",
    "safetensors-0.6.2-cp38-abi3-manylinux_2_17_{a}.manylinux2014_{a}.whl",
]


def names(templates: Sequence[str], arch: str) -> list[str]:
    return [t.format(a=arch) for t in templates]


def run_isolated(argv: Sequence[str], **env: str) -> tuple[int, str]:
    """Run pip here with no pip configuration (plus ``env``): (exit status, output)."""
    out = subprocess.run(
        list(argv), capture_output=True, text=True, env={**isolated_pip_env(), **env}, timeout=300
    )
    return out.returncode, out.stdout + out.stderr


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackageIndexServer]:
    yield from served_indexes(tmp_path_factory.mktemp("index"))


@pytest.fixture
def pip_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip run by the local transport (a subprocess of this one) reads no configuration."""
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")


def build(index: PackageIndexServer, arch: str, out: Path):
    plan = plan_wheelhouse(
        arch,
        out,
        requirements=REQS,
        torch_index=index.url("torch-cpu"),
        index_url=index.url("pypi"),
    )
    return plan, build_wheelhouse(plan, run_isolated)


@pytest.fixture(scope="module")
def x86_wheelhouse(index: PackageIndexServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheelhouse-x86_64")
    build(index, "x86_64", out)
    return out


# --------------------------------------------------------------------------- wheelhouse


def test_the_pypi_stand_in_pulls_cuda_packages_into_a_plain_download(
    index: PackageIndexServer, tmp_path: Path
) -> None:
    """The trap is real: without a torch index of its own, pip takes the CUDA build."""
    argv = [sys.executable, "-m", "pip", "download", "--only-binary=:all:"]
    for tag in WHEEL_PLATFORMS["aarch64"]:
        argv += ["--platform", tag]
    argv += ["--python-version", "3.11", "--dest", str(tmp_path), "--index-url", index.url("pypi")]
    code, output = run_isolated([*argv, "torch==2.13.0"])
    assert code == 0, output
    got = sorted(p.name for p in tmp_path.iterdir())
    assert "torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl" in got
    assert "nvidia_cudnn_cu13-9.20.0.48-py3-none-manylinux_2_28_aarch64.whl" in got
    assert {"triton", "cuda_toolkit", "cuda_bindings"} <= {n.split("-")[0] for n in got}


def test_wheelhouse_aarch64_takes_torch_from_the_torch_index_and_never_pypi_torch(
    index: PackageIndexServer, tmp_path: Path
) -> None:
    mark = index.served.mark()
    _, report = build(index, "aarch64", tmp_path / "wh")
    assert list(report.wheels) == sorted(names(TORCH_DEPS + OTHERS, "aarch64"))
    assert report.torch_wheel == "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_aarch64.whl"
    assert not any(w.startswith(("nvidia", "cuda", "triton")) for w in os.listdir(tmp_path / "wh"))
    # torch and its dependencies came from the torch index; PyPI served only the rest
    assert index.served.wheels_from("torch-cpu", mark) == sorted(names(TORCH_DEPS, "aarch64"))
    assert index.served.wheels_from("pypi", mark) == sorted(names(OTHERS, "aarch64"))
    platform = [
        "--only-binary=:all:", "--platform", "manylinux2014_aarch64",
        "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11",
        "--dest", str(tmp_path / "wh"),
    ]  # fmt: skip
    download = [sys.executable, "-m", "pip", "download", *QUIET[:2], *platform]
    assert report.pip_calls == (
        (*download, "--index-url", index.url("torch-cpu"), "torch==2.13.0"),
        (
            *download,
            "--index-url",
            index.url("pypi"),
            str(tmp_path / "wh" / report.torch_wheel),
            "numpy>=1.26",
            "safetensors>=0.4",
            "pyserial>=3.5",
        ),
    )

    # the folder installs for aarch64 with no index at all, and holds all it needs
    target = tmp_path / "target"
    argv = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links"]
    argv += [str(tmp_path / "wh"), "--target", str(target), *platform[:7], *REQS]
    code, output = run_isolated(argv)
    assert code == 0, output
    assert "torch 2.13.0+cpu" in (target / "torch" / "__init__.py").read_text()
    assert not any(p.name.startswith(("nvidia", "cuda", "triton")) for p in target.iterdir())


@pytest.mark.slow  # makes a venv
def test_the_x86_64_wheelhouse_installs_with_no_index_into_a_fresh_venv(
    x86_wheelhouse: Path, tmp_path: Path
) -> None:
    python = fresh_venv(tmp_path / "venv")
    argv = [python, "-m", "pip", "install", *QUIET, "--no-index", "--find-links"]
    code, output = run_isolated([*argv, str(x86_wheelhouse), *REQS])
    assert code == 0, output
    installed = installed_in(python)
    assert installed["torch"] == "2.13.0+cpu" and installed["numpy"] == "2.3.4"
    assert not [n for n in installed if n.startswith(("nvidia", "cuda", "triton"))]


def test_wheelhouse_names_the_torch_index_it_cannot_reach(tmp_path: Path) -> None:
    plan = plan_wheelhouse(
        "aarch64", tmp_path, requirements=REQS, torch_index=f"http://127.0.0.1:{closed_port()}/s"
    )
    with pytest.raises(PackageInstallError) as err:
        build_wheelhouse(plan, lambda argv: run_isolated(argv, PIP_RETRIES="1"))
    assert err.value.message.startswith(
        f"this machine: pip could not fetch torch==2.13.0: {plan.torch_index} cannot be reached"
    )
    assert "on a machine that can reach it" in (err.value.hint or "")


def test_wheelhouse_dry_run_shows_the_torch_index(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "wheelhouse", "--platform", "aarch64", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert (
        lines[0]
        == "# 1. torch==2.13.0 and its dependencies from https://download.pytorch.org/whl/cpu"
    )
    assert lines[1].endswith("--index-url https://download.pytorch.org/whl/cpu torch==2.13.0")
    assert "--platform manylinux_2_28_aarch64 --python-version 3.11 --dest wheels" in lines[1]
    assert "'wheels/torch-2.13.0*.whl' 'transformers>=" in lines[3]
    assert "--index-url" not in lines[3] and not (tmp_path / "wheels").exists()


# --------------------------------------------------------------------------- bootstrap


class RecordingTransport(LocalTransport):
    """The local transport, keeping every command it runs (which still run for real)."""

    def __init__(self, device: object) -> None:
        super().__init__(device)
        self.commands: list[list[str]] = []

    def run(self, argv: Sequence[str], **kwargs: object):  # type: ignore[override]
        self.commands.append([str(a) for a in argv])
        return super().run(argv, **kwargs)  # type: ignore[arg-type]

    def pip(self) -> list[list[str]]:
        return [c for c in self.commands if c[1:4] == ["-m", "pip", "install"]]


def system_python() -> str:
    """The Debian system Python (as on Raspberry Pi OS Bookworm) when it can make venvs."""
    system = "/usr/bin/python3"
    probe = subprocess.run([system, "-c", "import ensurepip, venv"], capture_output=True)
    return system if Path(system).exists() and probe.returncode == 0 else sys.executable


def fresh_venv(folder: Path) -> str:
    subprocess.run([system_python(), "-m", "venv", str(folder)], check=True, timeout=300)
    return str(folder / "bin" / "python3")


def installed_in(python: str) -> dict[str, str]:
    code = "import json, importlib.metadata as m; print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
    return json.loads(subprocess.check_output([python, "-c", code], text=True))


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def device(tmp_path: Path, **fields: str):
    extra = "".join(f", {k}: '{v}'" for k, v in fields.items())
    python = tmp_path / "venv" / "bin" / "python3"
    text = f"devices:\n  here: {{transport: local, workdir: '{tmp_path / 'wd'}', python: '{python}'{extra}}}\n"
    return parse_inventory(text)["here"]


@pytest.mark.slow  # makes a venv
def test_bootstrap_online_installs_cpu_torch_from_its_index_and_never_pypi_torch(
    index: PackageIndexServer, tmp_path: Path, pip_env: None
) -> None:
    base = system_python()
    here = device(tmp_path, base_python=base, torch_index=index.url("torch-cpu"))
    t = RecordingTransport(here)
    mark = index.served.mark()
    report = bootstrap_device(t, requirements=REQS, index_url=index.url("pypi"))
    python, venv = here.python, str(tmp_path / "venv")
    assert report.created and report.venv == venv and [base, "-m", "venv", venv] in t.commands
    assert t.pip() == [
        [python, "-m", "pip", "install", *QUIET, "--only-binary=:all:",
         "--index-url", index.url("torch-cpu"), "torch==2.13.0"],
        [python, "-m", "pip", "install", *QUIET, "--index-url", index.url("pypi"),
         "torch==2.13.0", "numpy>=1.26", "safetensors>=0.4", "pyserial>=3.5"],
    ]  # fmt: skip
    assert report.torch == "2.13.0+cpu" and report.torch_source == index.url("torch-cpu")
    assert installed_in(python)["torch"] == "2.13.0+cpu"
    assert index.served.wheels_from("torch-cpu", mark) == sorted(names(TORCH_DEPS, "x86_64"))
    assert index.served.wheels_from("pypi", mark) == sorted(names(OTHERS, "x86_64"))
    # again: the venv is reused and nothing changes
    again = bootstrap_device(
        RecordingTransport(here), requirements=REQS, index_url=index.url("pypi")
    )
    assert not again.created and again.torch == "2.13.0+cpu"


@pytest.mark.slow  # makes a venv
def test_bootstrap_from_a_wheelhouse_pushes_it_and_installs_with_no_index(
    x86_wheelhouse: Path, tmp_path: Path, pip_env: None
) -> None:
    here = device(
        tmp_path, base_python=system_python(), torch_index=f"http://127.0.0.1:{closed_port()}/s"
    )
    t = RecordingTransport(here)
    report = bootstrap_device(t, wheelhouse=x86_wheelhouse, requirements=REQS)
    pushed = str(tmp_path / "wd" / "wheelhouse")
    assert t.pip() == [
        [here.python, "-m", "pip", "install", *QUIET, "--no-index", "--find-links", pushed, *REQS]
    ]
    assert report.wheelhouse_pushed == len(TORCH_DEPS + OTHERS) and report.torch == "2.13.0+cpu"
    assert sorted(os.listdir(pushed)) == sorted(os.listdir(x86_wheelhouse))


def test_a_wheelhouse_for_another_cpu_is_refused_before_anything_is_pushed(
    index: PackageIndexServer, tmp_path: Path, pip_env: None
) -> None:
    _, report = build(index, "aarch64", tmp_path / "wh")
    here = device(tmp_path, base_python=sys.executable)
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, tmp_path / "venv" / "bin" / "python3")  # an existing "venv"
    with pytest.raises(PackageInstallError) as err:
        bootstrap_device(LocalTransport(here), wheelhouse=tmp_path / "wh", requirements=REQS)
    assert err.value.message == (
        "here: the wheelhouse has no wheel of torch==2.13.0 for Python 3.11 on x86_64 (it holds: "
        f"{report.torch_wheel})"
    )
    assert "--platform x86_64" in (err.value.hint or "")
    assert not (tmp_path / "wd" / "wheelhouse").exists()


@pytest.fixture
def empty_venv(tmp_path: Path) -> Path:
    """A venv nothing gets installed into: the failures below happen before any install."""
    return Path(fresh_venv(tmp_path / "venv"))


@pytest.mark.slow  # makes a venv
def test_bootstrap_names_the_torch_version_its_index_lacks(
    index: PackageIndexServer, tmp_path: Path, empty_venv: Path, pip_env: None
) -> None:
    here = device(tmp_path, torch_index=index.url("torch-cpu"), torch_version="2.99.0")
    with pytest.raises(PackageInstallError) as err:
        bootstrap_device(LocalTransport(here), requirements=REQS, index_url=index.url("pypi"))
    assert err.value.message == (
        f"here: {index.url('torch-cpu')} has no wheel of torch==2.99.0 for Python 3.11 on "
        "x86_64 (versions offered: 2.13.0+cpu)"
    )
    assert "`torch_version` in the inventory" in (err.value.hint or "")


@pytest.mark.slow  # makes a venv
def test_bootstrap_names_the_torch_index_it_cannot_reach(
    tmp_path: Path, empty_venv: Path, pip_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_RETRIES", "1")
    url = f"http://127.0.0.1:{closed_port()}/simple"
    here = device(tmp_path, torch_index=url)
    with pytest.raises(PackageInstallError) as err:
        bootstrap_device(LocalTransport(here), requirements=REQS)
    assert err.value.message.startswith(
        f"here: pip could not fetch torch==2.13.0: {url} cannot be reached"
    )
    assert "--devices here --wheelhouse wheels/" in (err.value.hint or "")


@pytest.mark.slow  # makes a venv
def test_bootstrap_refuses_a_venv_that_already_holds_cuda_torch(
    index: PackageIndexServer, tmp_path: Path, empty_venv: Path, pip_env: None
) -> None:
    """A device bootstrapped from PyPI before keeps its CUDA torch: said, not hidden."""
    naive = [str(empty_venv), "-m", "pip", "install", "--index-url", index.url("pypi")]
    subprocess.run([*naive, "torch==2.13.0"], check=True, capture_output=True, timeout=300)
    here = device(tmp_path, torch_index=index.url("torch-cpu"))
    with pytest.raises(PackageInstallError) as err:
        bootstrap_device(LocalTransport(here), requirements=REQS, index_url=index.url("pypi"))
    assert "holds CUDA packages: cuda-bindings, cuda-toolkit, nvidia-" in err.value.message
    assert "(torch 2.13.0)" in err.value.message
    assert f"rm -r {tmp_path / 'venv'}" in (err.value.hint or "")


def test_bootstrap_without_a_working_base_python_says_what_to_install(tmp_path: Path) -> None:
    here = device(tmp_path, base_python="/nonexistent/python3")
    with pytest.raises(ConfigError) as err:
        bootstrap_device(LocalTransport(here), requirements=REQS)
    assert err.value.message == (
        "here: base_python `/nonexistent/python3` does not run on the device, so the venv "
        f"{tmp_path / 'venv'} cannot be created"
    )
    assert "sudo apt install python3-venv" in (err.value.hint or "")
    assert not (tmp_path / "venv").exists()
