"""deploy_files (skip by sha256, verify, refuse '..'), layout, bootstrap and wheelhouse commands."""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

import pytest

from orchestrator.deploy import (
    PushItem,
    RemoteLayout,
    bootstrap_device,
    deploy_files,
    device_requirements,
    items_for_directory,
    pip_install_argv,
    wheelhouse_argv,
)
from orchestrator.inventory import parse_inventory
from orchestrator.transport import open_transport
from orchestrator.transport.local import LocalTransport
from tasks.errors import ArtifactError, ConfigError


def make_device(tmp_path: Path, python: str | None = None):
    extra = f", python: '{python}'" if python else ""
    return parse_inventory(
        f"devices:\n  here: {{transport: local, workdir: '{tmp_path / 'wd'}'{extra}}}\n"
    )["here"]


def item(path: Path, remote: str) -> PushItem:
    return PushItem(path, remote, hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.fixture
def files(tmp_path: Path) -> list[PushItem]:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"a" * 100_000)
    (src / "sub" / "b.txt").write_text("bee")
    return items_for_directory(src, "artifacts/x")


def test_push_then_skip_then_repush_what_changed_on_the_device(
    tmp_path: Path, files: list[PushItem]
) -> None:
    t = open_transport(make_device(tmp_path))
    events: list[tuple[str, int, int]] = []
    first = deploy_files(t, files, progress=lambda *a: events.append(a))
    assert sorted(first.pushed) == ["artifacts/x/a.bin", "artifacts/x/sub/b.txt"]
    assert first.skipped == () and first.bytes_sent == 100_003
    assert (tmp_path / "wd/artifacts/x/sub/b.txt").read_text() == "bee"
    assert ("artifacts/x/a.bin", 100_000, 100_000) in events
    second = deploy_files(t, files)
    assert second.pushed == () and len(second.skipped) == 2 and second.bytes_sent == 0
    (tmp_path / "wd/artifacts/x/a.bin").write_bytes(b"corrupted")
    third = deploy_files(t, files)
    assert third.pushed == ("artifacts/x/a.bin",)
    assert (tmp_path / "wd/artifacts/x/a.bin").read_bytes() == b"a" * 100_000


def test_an_explicit_workdir_is_used(tmp_path: Path, files: list[PushItem]) -> None:
    t = open_transport(make_device(tmp_path))
    deploy_files(t, files[:1], workdir=str(tmp_path / "other"))
    assert (tmp_path / "other" / files[0].remote).exists()


@pytest.mark.parametrize("remote", ["../escape", "/etc/passwd", "a/../../b", "~/x"])
def test_paths_leaving_the_workdir_are_refused(tmp_path: Path, remote: str) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(ConfigError):
        deploy_files(open_transport(make_device(tmp_path)), [item(src, remote)])
    assert not (tmp_path / "escape").exists()


class CorruptingTransport(LocalTransport):
    """Flips the uploaded bytes, as a failing SD card or link would."""

    def put(self, local, remote, *, progress=None):
        super().put(local, remote, progress=progress)
        Path(self.resolve(remote)).write_bytes(b"garbage")


def test_a_file_that_arrives_corrupted_is_an_artifact_error(
    tmp_path: Path, files: list[PushItem]
) -> None:
    t = CorruptingTransport(make_device(tmp_path))
    with pytest.raises(ArtifactError, match="arrived with sha256") as info:
        deploy_files(t, files[:1])
    assert "here:" in info.value.message and info.value.hint


def test_remote_layout_is_relative_and_content_named() -> None:
    layout = RemoteLayout("/home/pi/.tslm")
    sha = "ab" * 32
    assert layout.bundle_path(sha) == f"bundles/tslm-agent-{sha[:12]}.pyz"
    assert layout.model_dir(sha) == f"models/{sha[:16]}"
    assert layout.artifact_dir("tt-2x") == "artifacts/tt-2x"
    assert layout.job_dir("run1-pi4") == "jobs/run1-pi4"
    assert layout.absolute(layout.job_dir("j")) == "/home/pi/.tslm/jobs/j"
    for bad in ("..", "a/b", ""):
        with pytest.raises(ConfigError):
            layout.job_dir(bad)


def test_device_requirements_come_from_the_device_extra() -> None:
    reqs = device_requirements()
    assert "torch==2.13.0" in reqs
    assert not any(r.startswith(("fabric", "rich", "sqlalchemy", "tensorly")) for r in reqs)


def test_wheelhouse_command_downloads_binary_aarch64_wheels(tmp_path: Path) -> None:
    argv = wheelhouse_argv("aarch64", tmp_path, requirements=["torch==2.13.0"])
    assert argv[:5] == [sys.executable, "-m", "pip", "download", "--only-binary=:all:"]
    joined = " ".join(argv)
    assert "--platform manylinux2014_aarch64" in joined
    assert "--python-version 3.11" in joined and f"--dest {tmp_path}" in joined
    assert argv[-1] == "torch==2.13.0"
    with pytest.raises(ConfigError, match="unknown"):
        wheelhouse_argv("sparc", tmp_path)


def test_pip_install_offline_from_a_wheelhouse() -> None:
    assert pip_install_argv("/v/bin/python3", ["a==1"], find_links="/w/wheelhouse")[-4:] == [
        "--no-index",
        "--find-links",
        "/w/wheelhouse",
        "a==1",
    ]
    assert "--index-url" in pip_install_argv("p", ["a"], index_url="http://mirror/simple")


def build_wheel(folder: Path, name: str = "tslm_probe_pkg", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel, made by hand (no network, no build backend)."""
    dist = f"{name}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    files = {
        f"{name}.py": "VALUE = 42\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{n},,\n" for n in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for n, text in files.items():
            zf.writestr(n, text)
        zf.writestr(f"{dist}.dist-info/RECORD", record)
    return path


@pytest.mark.slow
def test_bootstrap_creates_the_venv_and_installs_from_a_wheelhouse(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build_wheel(wheels)
    python = tmp_path / "venv" / "bin" / "python3"
    t = open_transport(make_device(tmp_path, python=str(python)))
    report = bootstrap_device(
        t, wheelhouse=wheels, requirements=["tslm_probe_pkg==1.0"], base_python=sys.executable
    )
    assert report.created and report.venv == str(tmp_path / "venv")
    assert report.wheelhouse_pushed == 1
    out = t.run([str(python), "-c", "import tslm_probe_pkg; print(tslm_probe_pkg.VALUE)"])
    assert out.stdout.strip() == "42"
    again = bootstrap_device(
        t, wheelhouse=wheels, requirements=["tslm_probe_pkg==1.0"], base_python=sys.executable
    )
    assert not again.created and again.wheelhouse_pushed == 0


def test_bootstrap_needs_a_python_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bare command"):
        bootstrap_device(open_transport(make_device(tmp_path, python="python3")), requirements=[])
