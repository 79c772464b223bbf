"""Fake devices for the fleet tests: real OpenSSH servers on loopback addresses.

Each :class:`FakeDevice` is a Unix user with its own home, an ed25519 client key, its
own ``sshd`` (own host key, own port on 127.0.0.N, ``UsePAM no``) and a known_hosts file
holding its real host key. :func:`build_fleet` writes an inventory.yaml for them whose
``python`` is the project's .venv Python, so the devices need no installation.

Everything is undone by :meth:`FakeFleet.close` (sshd stopped, the users' processes
killed, users and homes removed, folder modes restored), which tolerates partial set-up
and runs every step even when one fails.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
SSHD = Path("/usr/sbin/sshd")
SSHD_START_TIMEOUT_S = 10.0


def fleet_unavailable_reason() -> str | None:
    """Why fake devices cannot be built here (None when they can)."""
    if os.geteuid() != 0:
        return "fleet tests need root (to create users and start sshd)"
    if not SSHD.exists():
        _install_openssh()
    if not SSHD.exists():
        return "OpenSSH server (/usr/sbin/sshd) is missing and could not be installed"
    if shutil.which("ssh-keygen") is None or shutil.which("useradd") is None:
        return "ssh-keygen or useradd is missing"
    return None


def _install_openssh() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True,
                       timeout=300, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "openssh-server", "openssh-client"], env=env, capture_output=True,
                       timeout=600, check=False)


def free_port(address: str) -> int:
    """A TCP port nobody listens on at ``address`` right now."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@dataclass
class FakeDevice:
    """One fake board: a Unix user reached through its own sshd."""

    name: str
    user: str
    home: Path
    address: str
    port: int
    dir: Path
    identity_file: Path
    known_hosts: Path
    host_key: Path
    meter: dict[str, Any] | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.user).pw_uid

    def write_sshd_config(self) -> None:
        self.sshd_config.write_text(
            f"ListenAddress {self.address}:{self.port}\n"
            f"HostKey {self.host_key}\n"
            "PidFile none\n"
            "UsePAM no\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "AuthorizedKeysFile .ssh/authorized_keys\n"
            "StrictModes yes\n"
            f"AllowUsers {self.user}\n"
            "PermitRootLogin no\n"
            "Subsystem sftp internal-sftp\n"
            "ClientAliveInterval 5\n"
            "MaxStartups 50\n"
            "LogLevel ERROR\n")

    def start(self) -> None:
        """Start (or restart) this device's sshd and wait until it answers."""
        if self.process is not None and self.process.poll() is None:
            return
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.sshd_config)],
                                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + SSHD_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd of {self.name} exited: {self.log.read_text()[-500:]}")
            with contextlib.suppress(OSError), \
                    socket.create_connection((self.address, self.port), timeout=0.5) as sock:
                sock.settimeout(1.0)
                if sock.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"sshd of {self.name} did not answer within "
                           f"{SSHD_START_TIMEOUT_S:g} s")

    def stop(self) -> None:
        """Stop the listening sshd (sessions already open keep running)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def regenerate_host_key(self) -> None:
        """Give the device a new host key (as a reinstalled board would have); restarts sshd."""
        self.stop()
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key))
        self.start()

    def known_hosts_line(self) -> str:
        """The known_hosts entry of this device's current host key."""
        key_type, key_b64 = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[{self.address}]:{self.port} {key_type} {key_b64}\n"

    def kill_user_processes(self) -> None:
        """Kill every process running as this device's user (by pid, from /proc)."""
        try:
            uid = self.uid
        except KeyError:
            return
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            uids = next((ln.split()[1:] for ln in status.splitlines()
                         if ln.startswith("Uid:")), [])
            if str(uid) in uids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)


@dataclass
class FakeFleet:
    """Fake devices plus the inventory.yaml that names them."""

    root: Path
    devices: list[FakeDevice] = field(default_factory=list)
    inventory_path: Path | None = None
    _modes: dict[Path, int] = field(default_factory=dict)
    _closed: bool = False

    def __getitem__(self, name: str) -> FakeDevice:
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)

    def grant_traversal(self, path: Path) -> None:
        """Let other users traverse every folder above ``path`` (modes restored at close)."""
        for folder in [path, *path.parents]:
            if not folder.is_dir():
                continue
            mode = stat.S_IMODE(folder.stat().st_mode)
            if not mode & stat.S_IXOTH:
                self._modes.setdefault(folder, mode)
                folder.chmod(mode | stat.S_IXOTH)

    def write_inventory(self, *, workdir: str = "~/.tslm",
                        overrides: dict[str, dict[str, Any]] | None = None) -> Path:
        """(Re)write inventory.yaml for the devices; ``overrides`` per device name."""
        devices: dict[str, Any] = {}
        for device in self.devices:
            entry: dict[str, Any] = {
                "host": device.address, "port": device.port, "user": device.user,
                "identity_file": str(device.identity_file),
                "known_hosts": str(device.known_hosts), "board": "generic",
                "tags": [device.name, "lab"],
            }
            if device.meter is not None:
                entry["meter"] = dict(device.meter)
            entry.update((overrides or {}).get(device.name, {}))
            devices[device.name] = entry
        doc = {"defaults": {"python": str(VENV_PYTHON), "workdir": workdir},
               "devices": devices, "groups": {"lab": [d.name for d in self.devices]}}
        self.inventory_path = self.root / "inventory.yaml"
        self.inventory_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.inventory_path

    def close(self) -> None:
        """Tear everything down; every step runs even when an earlier one fails."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for device in self.devices:
            for step in (device.stop, device.kill_user_processes,
                         lambda d=device: _run("userdel", "-f", "-r", d.user)):
                try:
                    step()
                except Exception as exc:
                    errors.append(f"{device.name}: {exc}")
        for folder, mode in self._modes.items():
            try:
                folder.chmod(mode)
            except OSError as exc:
                errors.append(f"restore mode of {folder}: {exc}")
        if errors:
            print("fleet teardown problems:\n  " + "\n  ".join(errors), file=sys.stderr)


def _add_device(fleet: FakeFleet, name: str, index: int,
                meter: dict[str, Any] | None) -> FakeDevice:
    user = f"tslm{secrets.token_hex(3)}{index}"
    home = Path("/home") / user
    ddir = fleet.root / name
    ddir.mkdir(parents=True)
    address = f"127.0.0.{10 + index}"
    device = FakeDevice(name=name, user=user, home=home, address=address,
                        port=free_port(address), dir=ddir, identity_file=ddir / "id_ed25519",
                        known_hosts=ddir / "known_hosts", host_key=ddir / "ssh_host_ed25519_key",
                        meter=meter)
    # registered before the user exists, so that close() removes whatever was made
    fleet.devices.append(device)
    _run("useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash",
         "--password", "*", user)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"tslm-test-{name}",
         "-f", str(device.identity_file))
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(device.host_key))
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    authorized = ssh_dir / "authorized_keys"
    shutil.copyfile(device.identity_file.with_suffix(".pub"), authorized)
    authorized.chmod(0o600)
    pw = pwd.getpwnam(user)
    for path in (ssh_dir, authorized):
        os.chown(path, pw.pw_uid, pw.pw_gid)
    device.known_hosts.write_text(device.known_hosts_line())
    device.write_sshd_config()
    device.start()
    return device


def build_fleet(root: Path, names: list[str], *,
                meters: list[dict[str, Any] | None] | None = None,
                workdir: str = "~/.tslm",
                overrides: dict[str, dict[str, Any]] | None = None) -> FakeFleet:
    """Stand up one fake device per name under ``root`` and write their inventory.

    ``meters`` gives each device's ``meter:`` entry (None: none written). On any failure
    the part already built is torn down before the error propagates.
    """
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    root.mkdir(parents=True, exist_ok=True)
    fleet = FakeFleet(root=root)
    try:
        # device users run the project's Python, which lives under folders closed to others
        fleet.grant_traversal(VENV_PYTHON.resolve().parent)
        fleet.grant_traversal(ROOT)
        meter_list = list(meters or [])
        for index, name in enumerate(names):
            meter = meter_list[index] if index < len(meter_list) else None
            _add_device(fleet, name, index, meter)
        fleet.write_inventory(workdir=workdir, overrides=overrides)
    except BaseException:
        fleet.close()
        raise
    return fleet
