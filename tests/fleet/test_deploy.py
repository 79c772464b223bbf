"""deploy and doctor over SSH against fake devices, and the fixture's own clean-up."""

from __future__ import annotations

import hashlib
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.bundle import build_bundle
from orchestrator.deploy import PushItem, RemoteLayout, deploy_files, items_for_directory
from orchestrator.doctor import FAIL, OK, run_doctor
from orchestrator.inventory import load_inventory
from orchestrator.transport import open_transport
from testbed.fleet import build_fleet

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(180)]

LIGHT = {"json": "json", "sqlite3": "sqlite3"}


def test_deploy_pushes_skips_and_repairs(fake_fleet, tmp_path: Path) -> None:
    src = tmp_path / "artifact"
    (src / "tt").mkdir(parents=True)
    (src / "manifest.json").write_text('{"method": "tt"}')
    (src / "tt" / "cores.bin").write_bytes(bytes(range(256)) * 4000)
    items = items_for_directory(src, RemoteLayout.artifact_dir("tt-2x"))
    device = load_inventory(fake_fleet.inventory_path)["pi4"]
    with open_transport(device) as t:
        first = deploy_files(t, items)
        assert sorted(first.pushed) == [
            "artifacts/tt-2x/manifest.json",
            "artifacts/tt-2x/tt/cores.bin",
        ]
        second = deploy_files(t, items)
        assert second.pushed == () and second.bytes_sent == 0
        remote = t.resolve("~/.tslm/artifacts/tt-2x/tt/cores.bin")
        t.run(["sh", "-c", 'printf x >> "$1"', "sh", remote])  # corrupt it on the device
        third = deploy_files(t, items)
        assert third.pushed == ("artifacts/tt-2x/tt/cores.bin",)
        local_sha = hashlib.sha256((src / "tt" / "cores.bin").read_bytes()).hexdigest()
        assert t.sha256(remote) == local_sha
        owner = t.run(["stat", "-c", "%U", remote]).stdout.strip()
    assert owner == fake_fleet["pi4"].user


def test_doctor_reports_a_mixed_fleet_per_device(fleet_factory, tmp_path: Path) -> None:
    fleet = fleet_factory(3)
    inv = load_inventory(fleet.inventory_path)
    bundle = build_bundle(tmp_path / "cache")
    with open_transport(inv["pi4"]) as t:
        deploy_files(
            t, [PushItem(bundle.path, RemoteLayout.bundle_path(bundle.sha256), bundle.sha256)]
        )
    fleet["pi5"].stop()
    reports = run_doctor(list(inv.devices.values()), modules=LIGHT, bundle_sha256=bundle.sha256)
    assert [r.device for r in reports] == ["pi4", "pi5", "pi3"]
    pi4, pi5, pi3 = ({c.name: c for c in r.checks} for r in reports)
    assert pi4["bundle"].status == OK and pi4["python"].status == OK
    assert reports[0].ok
    assert pi5["reachable"].status == FAIL and "pi5" in pi5["reachable"].detail
    assert pi3["reachable"].status == OK and pi3["bundle"].status == FAIL
    assert "tslm-fleet deploy --devices pi3" in pi3["bundle"].hint


def cli(fleet, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args, "-i", str(fleet.inventory_path)],
        capture_output=True,
        text=True,
        timeout=150,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "TSLM_CACHE": str(fleet.root / "cache")},
    )


@pytest.mark.slow  # imports torch and transformers as the device user
def test_deploy_and_doctor_cli_on_a_fleet_with_one_device_down(fake_fleet) -> None:
    fake_fleet["pi5"].stop()
    out = cli(fake_fleet, "deploy", "--devices", "lab")
    assert out.returncode == 1, out.stderr
    assert "ok   pi4: 1 pushed, 0 already there" in out.stdout
    assert "FAIL pi5: pi5 (" in out.stdout and "1 of 2 devices failed" in out.stdout
    assert "ok   pi4: 0 pushed, 1 already there" in cli(fake_fleet, "deploy", "-d", "pi4").stdout
    # pi4 is ready (real package imports as the device user); pi5 is down
    out = cli(fake_fleet, "doctor", "--devices", "lab")
    assert out.returncode == 1, out.stderr
    assert "1 of 2 devices not ready" in out.stdout and out.stdout.rstrip().endswith("pi5"), (
        out.stdout
    )
    assert "Traceback" not in out.stdout + out.stderr


def test_the_fixture_removes_users_and_restores_folder_modes(
    tmp_path: Path, fleet_support: None
) -> None:
    venv_root = Path(sys.executable).resolve().parents[3]
    before = {p: stat.S_IMODE(p.stat().st_mode) for p in (venv_root, *venv_root.parents)}
    fleet = build_fleet(tmp_path / "f", ["pi4"])
    user, home, sshd = fleet["pi4"].user, fleet["pi4"].home, fleet["pi4"].process
    assert home.is_dir() and sshd is not None and sshd.poll() is None
    fleet.close()
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    assert not home.exists() and sshd.poll() is not None
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in before} == before
