"""Fake devices: real OpenSSH servers on loopback addresses, for tests and benchmarks.

Each :class:`FakeDevice` is a Unix user with its own home, an ed25519 client key, its
own ``sshd`` (own host key, own port on 127.0.0.N, ``UsePAM no``) and a known_hosts file
holding its real host key. :func:`build_fleet` writes an inventory.yaml for them whose
``python`` is the project's .venv Python, so the devices need no installation.

With ``netns=True`` every device lives in a network namespace of its own, joined to the
test machine by a veth pair with addresses in 10.213.0.0/16: its sshd runs inside the
namespace, so the link can be taken down, brought back and shaped with ``tc netem``
(:meth:`FakeDevice.link_down`, :meth:`FakeDevice.link_up`, :meth:`FakeDevice.netem`).

Everything is undone by :meth:`FakeFleet.close` (sshd stopped, the users' processes
killed, users and homes removed, namespaces and veth pairs deleted, folder modes
restored), which tolerates partial set-up and runs every step even when one fails.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed.netns import delete_netns, make_netns

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
SSHD = Path("/usr/sbin/sshd")
SSHD_START_TIMEOUT_S = 10.0


def fleet_unavailable_reason() -> str | None:
    """Why fake devices cannot be built here (None when they can)."""
    if os.geteuid() != 0:
        return "fleet tests need root (to create users and start sshd)"
    if not SSHD.exists():
        return "OpenSSH server (/usr/sbin/sshd) is missing (make system-packages installs it)"
    if shutil.which("ssh-keygen") is None or shutil.which("useradd") is None:
        return "ssh-keygen or useradd is missing"
    return None


def meter_roots(meters: list[Any]) -> list[str]:
    """The folders that emulated meters point at (sysfs trees, fake vcgencmd): the
    inventory's ``defaults: {meter_roots}`` must allow them."""
    roots: set[str] = set()
    for meter in meters:
        if not isinstance(meter, dict):
            continue
        if meter.get("sysfs_root") not in (None, "/"):
            roots.add(str(meter["sysfs_root"]))
        if meter.get("vcgencmd"):
            roots.add(str(Path(meter["vcgencmd"]).parent))
    return sorted(roots)


def free_port(address: str) -> int:
    """A TCP port nobody listens on at ``address`` right now."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found = {pid}
    changed = True
    while changed:
        new = {p for p, ppid in parents.items() if ppid in found} - found
        found |= new
        changed = bool(new)
    return sorted(found - {pid})


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
    #: network namespace holding this device's sshd, and the controller-side veth end
    netns: str | None = None
    host_if: str | None = None

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
            "LogLevel ERROR\n"
        )

    def start(self) -> None:
        """Start (or restart) this device's sshd and wait until it answers."""
        if self.process is not None and self.process.poll() is None:
            return
        argv = [str(SSHD), "-D", "-e", "-f", str(self.sshd_config)]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]  # ip execs sshd: same pid
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + SSHD_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd of {self.name} exited: {self.log.read_text()[-500:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.address, self.port), timeout=0.5) as sock,
            ):
                sock.settimeout(1.0)
                if sock.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"sshd of {self.name} did not answer within {SSHD_START_TIMEOUT_S:g} s")

    def stop(self) -> None:
        """Stop the listening sshd (sessions already open keep running)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill_sshd(self) -> None:
        """SIGKILL the listening sshd and every session process below it (a crashed daemon)."""
        if self.process is None:
            return
        for pid in [*descendants(self.process.pid), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=5)

    def link_down(self) -> None:
        """Pull the cable: the controller-side end of the veth pair goes down."""
        _run("ip", "link", "set", self._host_if(), "down")

    def link_up(self) -> None:
        _run("ip", "link", "set", self._host_if(), "up")

    def netem(self, spec: str | None) -> None:
        """Shape the link with ``tc netem`` (e.g. ``"delay 300ms loss 5%"``); None clears it.

        Applied on both veth ends, so both directions are delayed and lossy.
        """
        assert self.netns is not None, "netem needs a device built with netns=True"
        for prefix, dev in ((), self._host_if()), (("ip", "netns", "exec", self.netns), "eth0"):
            subprocess.run(
                [*prefix, "tc", "qdisc", "del", "dev", dev, "root"],
                capture_output=True,
                check=False,
            )
            if spec:
                _run(*prefix, "tc", "qdisc", "add", "dev", dev, "root", "netem", *spec.split())

    def _host_if(self) -> str:
        assert self.host_if is not None, "link faults need a device built with netns=True"
        return self.host_if

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
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {key_type} {key_b64}\n"

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
            uids = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("Uid:")), [])
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
        """Let other users traverse every folder above ``path`` (modes restored at close).

        Fleets of other test processes on this machine may need the same folders, so the
        original modes and the live fleets are kept in a machine-wide ledger: the last
        fleet to close restores the modes, never one while another still runs.
        """
        with _traversal_ledger() as ledger:
            ledger["holders"][self._holder] = os.getpid()
            for folder in [path, *path.parents]:
                if not folder.is_dir():
                    continue
                mode = stat.S_IMODE(folder.stat().st_mode)
                if not mode & stat.S_IXOTH:
                    ledger["modes"].setdefault(str(folder), mode)
                    self._modes.setdefault(folder, mode)
                    folder.chmod(mode | stat.S_IXOTH)

    @property
    def _holder(self) -> str:
        return f"{os.getpid()}-{id(self)}"

    def _restore_modes(self) -> list[str]:
        errors: list[str] = []
        with _traversal_ledger() as ledger:
            ledger["holders"].pop(self._holder, None)
            if ledger["holders"]:
                return errors  # another fleet still needs the folders open
            for folder, mode in ledger["modes"].items():
                try:
                    Path(folder).chmod(mode)
                except OSError as exc:
                    errors.append(f"restore mode of {folder}: {exc}")
            ledger["modes"].clear()
        return errors

    def write_inventory(
        self, *, workdir: str = "~/.tslm", overrides: dict[str, dict[str, Any]] | None = None
    ) -> Path:
        """(Re)write inventory.yaml for the devices; ``overrides`` per device name."""
        devices: dict[str, Any] = {}
        for device in self.devices:
            entry: dict[str, Any] = {
                "host": device.address,
                "port": device.port,
                "user": device.user,
                "identity_file": str(device.identity_file),
                "known_hosts": str(device.known_hosts),
                "board": "generic",
                "tags": [device.name, "lab"],
            }
            if device.meter is not None:
                entry["meter"] = dict(device.meter)
            entry.update((overrides or {}).get(device.name, {}))
            devices[device.name] = entry
        defaults: dict[str, Any] = {"python": str(VENV_PYTHON), "workdir": workdir}
        roots = meter_roots([entry.get("meter") for entry in devices.values()])
        if roots:
            defaults["meter_roots"] = roots
        doc = {
            "defaults": defaults,
            "devices": devices,
            "groups": {"lab": [d.name for d in self.devices]},
        }
        self.inventory_path = self.root / "inventory.yaml"
        self.inventory_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.inventory_path

    def close(self) -> None:
        """Tear everything down; every step runs even when an earlier one fails."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        removed: set[str] = set()  # devices of a light fleet share one user
        for device in self.devices:
            for step in (
                device.stop,
                lambda d=device: d.user in removed or d.kill_user_processes(),
                lambda d=device: d.user in removed or _run("userdel", "-f", "-r", d.user),
                lambda d=device: removed.add(d.user),
                lambda d=device: delete_netns(d.netns, d.host_if),
            ):
                try:
                    step()
                except Exception as exc:
                    errors.append(f"{device.name}: {exc}")
        errors += self._restore_modes()
        if errors:
            print("fleet teardown problems:\n  " + "\n  ".join(errors), file=sys.stderr)


TRAVERSAL_LEDGER = Path("/run/tslm-fleet-traversal.json")


@contextlib.contextmanager
def _traversal_ledger() -> Iterator[dict[str, Any]]:
    """The machine-wide {holders: {id: pid}, modes: {folder: mode}}, locked while open."""
    import fcntl
    import json

    with open(TRAVERSAL_LEDGER.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            ledger = json.loads(TRAVERSAL_LEDGER.read_text())
        except (OSError, ValueError):
            ledger = {}
        ledger.setdefault("holders", {})
        ledger.setdefault("modes", {})
        # fleets of processes that died without closing hold nothing any more
        ledger["holders"] = {
            k: pid for k, pid in ledger["holders"].items() if Path(f"/proc/{pid}").exists()
        }
        yield ledger
        TRAVERSAL_LEDGER.write_text(json.dumps(ledger))


def _add_device(
    fleet: FakeFleet, name: str, index: int, meter: dict[str, Any] | None, netns: bool = False
) -> FakeDevice:
    tag = f"{secrets.token_hex(3)}{index}"
    user = f"tslm{tag}"
    home = Path("/home") / user
    ddir = fleet.root / name
    ddir.mkdir(parents=True)
    subnet = secrets.randbelow(250)
    address = f"10.213.{subnet}.2" if netns else f"127.0.0.{10 + index}"
    device = FakeDevice(
        name=name,
        user=user,
        home=home,
        address=address,
        port=22 if netns else free_port(address),
        dir=ddir,
        identity_file=ddir / "id_ed25519",
        known_hosts=ddir / "known_hosts",
        host_key=ddir / "ssh_host_ed25519_key",
        meter=meter,
        netns=f"tslm-{tag}" if netns else None,
        host_if=f"vh{tag}" if netns else None,
    )
    # registered before the user exists, so that close() removes whatever was made
    fleet.devices.append(device)
    if netns:
        assert device.netns is not None and device.host_if is not None
        make_netns(device.netns, device.host_if, tag, subnet)
    _run(
        "useradd",
        "--create-home",
        "--home-dir",
        str(home),
        "--shell",
        "/bin/bash",
        "--password",
        "*",
        user,
    )
    _run(
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        f"tslm-test-{name}",
        "-f",
        str(device.identity_file),
    )
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


def build_fleet(
    root: Path,
    names: list[str],
    *,
    meters: list[dict[str, Any] | None] | None = None,
    workdir: str = "~/.tslm",
    overrides: dict[str, dict[str, Any]] | None = None,
    netns: bool = False,
) -> FakeFleet:
    """Stand up one fake device per name under ``root`` and write their inventory.

    ``meters`` gives each device's ``meter:`` entry (None: none written); ``netns`` puts
    every device in a network namespace of its own. On any failure the part already built
    is torn down before the error propagates.
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
            _add_device(fleet, name, index, meter, netns)
        fleet.write_inventory(workdir=workdir, overrides=overrides)
    except BaseException:
        fleet.close()
        raise
    return fleet


def build_light_fleet(root: Path, count: int, *, workdir_prefix: str = "~/.tslm-") -> FakeFleet:
    """``count`` fake devices that share one Unix user and client key: each still has its
    own sshd, host key, loopback address and agent work directory (``~/.tslm-dev01``...).

    Many of them fit on one machine (64 cost 64 sshd processes and one user), for the
    scaling benchmark, whose agents run the model-free ``idle`` task.
    """
    if not 1 <= count <= 200:
        raise ValueError(f"a light fleet has 1 to 200 devices, not {count}")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    fleet = FakeFleet(root=root)
    names = [f"dev{i + 1:02d}" for i in range(count)]
    try:
        fleet.grant_traversal(VENV_PYTHON.resolve().parent)
        fleet.grant_traversal(ROOT)
        first = _add_device(fleet, names[0], 0, None)
        for index, name in enumerate(names[1:], start=1):
            _add_sibling(fleet, first, name, index)
        fleet.write_inventory(
            overrides={name: {"workdir": f"{workdir_prefix}{name}"} for name in names}
        )
    except BaseException:
        fleet.close()
        raise
    return fleet


def _add_sibling(fleet: FakeFleet, first: FakeDevice, name: str, index: int) -> FakeDevice:
    """A device reached as ``first``'s user, through an sshd and host key of its own."""
    ddir = fleet.root / name
    ddir.mkdir(parents=True)
    address = f"127.0.0.{10 + index}"
    device = FakeDevice(
        name=name,
        user=first.user,
        home=first.home,
        address=address,
        port=free_port(address),
        dir=ddir,
        identity_file=first.identity_file,
        known_hosts=ddir / "known_hosts",
        host_key=ddir / "ssh_host_ed25519_key",
    )
    fleet.devices.append(device)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(device.host_key))
    device.known_hosts.write_text(device.known_hosts_line())
    device.write_sshd_config()
    device.start()
    return device
