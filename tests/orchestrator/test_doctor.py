"""doctor on the local device (real agent bundle) and an unreachable SSH device."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.bundle import build_bundle
from orchestrator.deploy import PushItem, RemoteLayout, deploy_files
from orchestrator.doctor import FAIL, OK, SKIP, WARN, check_device, run_doctor
from orchestrator.inventory import parse_inventory
from orchestrator.transport import open_transport

LIGHT = {"json": "json", "sqlite3": "sqlite3"}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def inventory(tmp_path: Path, python: str | None = None):
    extra = f", python: '{python}'" if python else ""
    return parse_inventory(f"""\
devices:
  here: {{transport: local, workdir: '{tmp_path / "wd"}'{extra}}}
  gone: {{host: 127.0.0.1, port: {closed_port()}, known_hosts: '{tmp_path / "kh"}'}}
""")


def by_name(health) -> dict[str, object]:
    return {c.name: c for c in health.checks}


def test_missing_packages_and_bundle_are_reported_with_fixes(tmp_path: Path) -> None:
    health = check_device(
        inventory(tmp_path)["here"], modules={**LIGHT, "tslm_no_such_module": "tslm-no-such"}
    )
    checks = by_name(health)
    assert checks["reachable"].status == OK and checks["python"].status == OK
    assert checks["packages"].status == FAIL
    assert "tslm-no-such" in checks["packages"].detail
    assert "tslm-fleet bootstrap --devices here" in checks["packages"].hint
    assert checks["bundle"].status == FAIL and "deploy --devices here" in checks["bundle"].hint
    assert checks["meter"].status == WARN  # no meter configured
    assert checks["disk"].status == OK and str(tmp_path) in checks["disk"].detail
    assert not health.ok and [c.name for c in health.failed] == ["packages", "bundle"]


def test_a_deployed_bundle_is_run_for_its_info(tmp_path: Path) -> None:
    device = inventory(tmp_path)["here"]
    bundle = build_bundle(tmp_path / "cache")
    with open_transport(device) as t:
        deploy_files(
            t, [PushItem(bundle.path, RemoteLayout.bundle_path(bundle.sha256), bundle.sha256)]
        )
    health = check_device(device, modules=LIGHT, bundle_sha256=bundle.sha256)
    checks = by_name(health)
    assert checks["bundle"].status == OK and "agent " in checks["bundle"].detail
    assert checks["thermal"].status in (OK, WARN)
    assert health.ok
    stale = check_device(device, modules=LIGHT, bundle_sha256="f" * 64)
    assert by_name(stale)["bundle"].status == FAIL
    assert "outdated" in by_name(stale)["bundle"].detail


def test_a_missing_python_skips_what_needs_it(tmp_path: Path) -> None:
    health = check_device(inventory(tmp_path, python="/nonexistent/bin/python3")["here"])
    checks = by_name(health)
    assert checks["python"].status == FAIL and "bootstrap" in checks["python"].hint
    assert checks["packages"].status == SKIP and checks["meter"].status == SKIP


def test_one_unreachable_device_does_not_stop_the_others(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    started = time.monotonic()
    reports = run_doctor([inv["gone"], inv["here"]], modules=LIGHT)
    assert time.monotonic() - started < 10
    assert [r.device for r in reports] == ["gone", "here"]
    gone = by_name(reports[0])
    assert list(gone) == ["reachable"] and gone["reachable"].status == FAIL
    assert "gone" in gone["reachable"].detail
    assert by_name(reports[1])["python"].status == OK


def test_inventory_check_cli(tmp_path: Path) -> None:
    good = tmp_path / "inv.yaml"
    good.write_text("devices:\n  pi4: {host: pi4.local, tags: [lab]}\n")
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "inventory", "check", "-i", str(good)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "pi4" in out.stdout and "is valid" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices:\n  pi4:\n    host: h\n    meter: {kind: um26c}\n")
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "inventory", "check"],
        capture_output=True,
        text=True,
        env={"TSLM_INVENTORY": str(bad), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 2
    assert f"{bad}:4 devices.pi4.meter.kind: unknown meter kind 'um26c'" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_wheelhouse_cli_dry_run(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "wheelhouse",
            "--platform",
            "aarch64",
            "--out",
            str(tmp_path / "wh"),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "--only-binary=:all: --platform manylinux2014_aarch64" in out.stdout
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in out.stdout
    assert not (tmp_path / "wh").exists()


@pytest.mark.parametrize("devices", ["nope", "pi4,lba"])
def test_fleet_commands_reject_unknown_devices(tmp_path: Path, devices: str) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text("devices:\n  pi4: {host: pi4.local, tags: [lab]}\n")
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "doctor", "-i", str(inv), "--devices", devices],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "unknown device, tag or group" in out.stderr
    assert "Traceback" not in out.stderr
