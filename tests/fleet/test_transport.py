"""The SSH transport against real OpenSSH servers (fake devices on loopback addresses)."""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from pathlib import Path

import pytest

from orchestrator.inventory import load_inventory
from orchestrator.transport import open_transport
from orchestrator.transport.errors import (
    ConnectError,
    HostKeyError,
    RemoteCommandError,
    TransportError,
)
from testbed.fleet import FakeDevice, FakeFleet

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(120)]


def devices_of(fleet: FakeFleet):
    return load_inventory(fleet.inventory_path).devices


def session_sshd_pids(device: FakeDevice) -> list[int]:
    """Every process below this device's listening sshd (its sessions and their children)."""
    assert device.process is not None
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found = {device.process.pid}
    changed = True
    while changed:
        new = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= new
        changed = bool(new)
    return sorted(found - {device.process.pid})


def test_commands_run_as_the_device_user(fake_fleet: FakeFleet) -> None:
    for name, device in devices_of(fake_fleet).items():
        fake = fake_fleet[name]
        with open_transport(device) as t:
            assert t.run(["id", "-un"]).stdout.strip() == fake.user
            assert t.home() == str(fake.home)
            res = t.run(["sh", "-c", "cat; echo err >&2; exit 3"], stdin=b"in", check=False)
            assert (res.exit_code, res.stdout, res.stderr) == (3, "in", "err\n")
            with pytest.raises(RemoteCommandError) as info:
                t.run(["false"])
            assert info.value.exit_code == 1 and name in info.value.message
            python = t.run([t.python(), "-c", "import sys; print(sys.version_info[:2])"])
            assert python.stdout.strip() == "(3, 11)"


def test_hostile_inventory_values_never_reach_a_shell(fleet_factory) -> None:
    marker = f"/tmp/pwned-{secrets.token_hex(4)}"
    hostile = f"~/x; touch {marker}"
    fleet = fleet_factory(1, overrides={"pi4": {"workdir": hostile}})
    device = devices_of(fleet)["pi4"]
    home = fleet["pi4"].home
    with open_transport(device) as t:
        workdir = t.workdir()
        assert workdir == f"{home}/x; touch {marker}"
        t.makedirs(workdir)
        src = fleet.root / "f.txt"
        src.write_text("payload")
        t.put(src, f"{workdir}/f.txt")
        assert t.run(["cat", f"{workdir}/f.txt"], cwd=workdir).stdout == "payload"
        assert t.sha256(f"{workdir}/f.txt") is not None
        t.run(["ls", "-la", workdir], env={"TSLM_X": f"$(touch {marker})"})
    assert not Path(marker).exists() and not Path("/tmp/pwned").exists()
    assert Path(f"{home}/x; touch {marker}/f.txt").read_text() == "payload"
    # everything created stayed inside the home directory
    assert sorted(p.name for p in home.iterdir() if not p.name.startswith(".")) == ["x; touch "]


def test_unknown_host_key_is_refused_with_the_keyscan_hint(fake_fleet: FakeFleet) -> None:
    fake = fake_fleet["pi4"]
    fake.known_hosts.write_text("")
    with pytest.raises(HostKeyError) as info:
        open_transport(devices_of(fake_fleet)["pi4"])
    err = info.value
    assert "pi4" in err.message and "not in" in err.message and "SHA256:" in err.message
    assert f"ssh-keyscan -p {fake.port} {fake.address} >> {fake.known_hosts}" in err.hint
    assert "--accept-new-hostkeys" in err.hint
    assert fake.known_hosts.read_text() == ""


def test_accept_new_hostkeys_records_the_key(fake_fleet: FakeFleet) -> None:
    fake = fake_fleet["pi5"]
    fake.known_hosts.unlink()
    device = devices_of(fake_fleet)["pi5"]
    with open_transport(device, accept_new_hostkeys=True) as t:
        assert t.run(["true"]).exit_code == 0
    assert fake.known_hosts.read_text() == fake.known_hosts_line()
    with open_transport(device) as t:  # strict checking now passes
        assert t.run(["true"]).exit_code == 0


def test_a_changed_host_key_is_refused_and_nothing_runs(fake_fleet: FakeFleet) -> None:
    fake = fake_fleet["pi4"]
    before = fake.known_hosts.read_text()
    fake.regenerate_host_key()
    device = devices_of(fake_fleet)["pi4"]
    marker = fake.home / "ran"
    for accept in (False, True):
        with (
            pytest.raises(HostKeyError) as info,
            open_transport(device, accept_new_hostkeys=accept) as t,
        ):
            t.run(["touch", str(marker)])
        assert "CHANGED" in info.value.message and "pi4" in info.value.message
        assert "ssh-keygen -R" in info.value.hint
    assert not marker.exists()
    assert fake.known_hosts.read_text() == before


def test_a_device_that_is_down_fails_fast_with_its_name(fake_fleet: FakeFleet) -> None:
    fake_fleet["pi5"].stop()
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        open_transport(devices_of(fake_fleet)["pi5"])
    assert time.monotonic() - started < 5
    assert "pi5" in info.value.message and info.value.hint
    with open_transport(devices_of(fake_fleet)["pi4"]) as t:  # the other one is fine
        assert t.run(["true"]).ok


def test_a_wrong_key_is_an_authentication_error_without_retries(fake_fleet: FakeFleet) -> None:
    wrong = fake_fleet["pi5"].identity_file
    fake_fleet.write_inventory(overrides={"pi4": {"identity_file": str(wrong)}})
    started = time.monotonic()
    with pytest.raises(ConnectError, match="authentication failed") as info:
        open_transport(devices_of(fake_fleet)["pi4"])
    assert time.monotonic() - started < 5
    assert "identity_file" in info.value.hint


def test_stream_delivers_lines_as_they_arrive(fake_fleet: FakeFleet) -> None:
    with open_transport(devices_of(fake_fleet)["pi4"]) as t:
        started = time.monotonic()
        lines = t.stream(["sh", "-c", "echo one; sleep 1; printf 'two\\nthree'"])
        assert next(lines) == "one"
        assert time.monotonic() - started < 0.9
        assert list(lines) == ["two", "three"]
        with pytest.raises(RemoteCommandError):
            list(t.stream(["sh", "-c", "exit 5"]))


def test_a_dropped_connection_during_stream_raises_connect_error(fake_fleet: FakeFleet) -> None:
    fake = fake_fleet["pi4"]
    t = open_transport(devices_of(fake_fleet)["pi4"])
    try:
        lines = t.stream(["sh", "-c", "while true; do echo tick; sleep 0.1; done"])
        assert next(lines) == "tick"
        for pid in session_sshd_pids(fake):
            os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ConnectError, match=r"pi4.*connection lost"):
            for _ in lines:
                assert time.monotonic() - started < 10
    finally:
        t.close()
    with open_transport(devices_of(fake_fleet)["pi4"]) as again:  # reconnect works
        assert again.run(["true"]).ok


def test_a_command_past_its_timeout_raises(fake_fleet: FakeFleet) -> None:
    with open_transport(devices_of(fake_fleet)["pi4"]) as t:
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"did not finish within 0\.5 s"):
            t.run(["sleep", "5"], timeout_s=0.5)
        assert time.monotonic() - started < 3
        assert t.run(["echo", "still usable"]).stdout == "still usable\n"


def test_put_replaces_a_file_atomically(fake_fleet: FakeFleet) -> None:
    device = devices_of(fake_fleet)["pi4"]
    old = fake_fleet.root / "old.bin"
    new = fake_fleet.root / "new.bin"
    old.write_bytes(b"o" * 1000)
    new.write_bytes(os.urandom(6_000_000))
    sizes: set[int] = set()
    stop = threading.Event()
    with open_transport(device) as t, open_transport(device) as watcher:
        t.put(old, "~/.tslm/target.bin")
        target = t.resolve("~/.tslm/target.bin")

        def watch() -> None:
            while not stop.is_set():
                sizes.add(watcher.sftp.stat(target).st_size)

        thread = threading.Thread(target=watch)
        thread.start()
        progress: list[int] = []
        try:
            t.put(new, "~/.tslm/target.bin", progress=lambda done, total: progress.append(done))
        finally:
            stop.set()
            thread.join()
        assert t.sha256("~/.tslm/target.bin") == watcher.sha256(target)
        assert t.listdir("~/.tslm") == ["target.bin"]  # no temporary file left
    assert sizes <= {1000, 6_000_000} and 1000 in sizes
    assert progress[-1] == 6_000_000 and len(progress) > 1
