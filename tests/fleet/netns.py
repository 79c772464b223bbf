"""Network namespaces of fake devices: a namespace and a veth pair per device.

The controller-side end keeps the name ``vh<tag>`` in the root namespace with
10.213.<subnet>.1/30; the device end is ``eth0`` inside the namespace with .2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fleet.devices import FakeDevice


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def delete_netns(device: FakeDevice) -> None:
    if device.netns is None:
        return
    for pid in (
        _run("ip", "netns", "pids", device.netns).split() if netns_exists(device.netns) else []
    ):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    if device.host_if is not None:  # deleting one end of a veth pair deletes both
        subprocess.run(["ip", "link", "del", device.host_if], capture_output=True, check=False)
    if netns_exists(device.netns):
        _run("ip", "netns", "del", device.netns)


def netns_exists(name: str) -> bool:
    return name in _run("ip", "netns", "list").split()


def make_netns(device: FakeDevice, tag: str, subnet: int) -> None:
    """Create the device's namespace and veth pair: 10.213.<subnet>.1 here, .2 in the namespace."""
    ns, host_if = device.netns, device.host_if
    assert ns is not None and host_if is not None
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", f"vd{tag}", "netns", ns)
    _run("ip", "netns", "exec", ns, "ip", "link", "set", f"vd{tag}", "name", "eth0")
    _run("ip", "addr", "add", f"10.213.{subnet}.1/30", "dev", host_if)
    _run("ip", "link", "set", host_if, "up")
    _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.213.{subnet}.2/30", "dev", "eth0")
    _run("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
    _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
