"""deploy_files (skip by sha256, verify, refuse '..'), layout, bootstrap and wheelhouse commands."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchestrator.bootstrap import bootstrap_device
from orchestrator.deploy import (
    PushItem,
    RemoteLayout,
    deploy_files,
    items_for_directory,
)
from orchestrator.inventory import parse_inventory
from orchestrator.transport import open_transport
from orchestrator.transport.local import LocalTransport
from orchestrator.wheels import device_requirements
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


def test_bootstrap_needs_a_python_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bare command"):
        bootstrap_device(open_transport(make_device(tmp_path, python="python3")), requirements=[])
