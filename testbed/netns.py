"""Network namespaces of fake devices: a namespace and a veth pair per device.

The controller-side end keeps the name ``vh<tag>`` in the root namespace with
10.213.<subnet>.1/30; the device end is ``eth0`` inside the namespace with .2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def delete_netns(ns: str | None, host_if: str | None) -> None:
    """Kill what runs in namespace ``ns``, delete its veth pair and the namespace."""
    if ns is None:
        return
    for pid in _run("ip", "netns", "pids", ns).split() if netns_exists(ns) else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    if host_if is not None:  # deleting one end of a veth pair deletes both
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
    if netns_exists(ns):
        _run("ip", "netns", "del", ns)


def netns_exists(name: str) -> bool:
    """Whether network namespace ``name`` exists."""
    return name in _run("ip", "netns", "list").split()


def make_netns(ns: str, host_if: str, tag: str, subnet: int) -> None:
    """Create namespace ``ns`` and a veth pair: 10.213.<subnet>.1 on ``host_if`` here,
    .2 on ``eth0`` in the namespace."""
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", f"vd{tag}", "netns", ns)
    _run("ip", "netns", "exec", ns, "ip", "link", "set", f"vd{tag}", "name", "eth0")
    _run("ip", "addr", "add", f"10.213.{subnet}.1/30", "dev", host_if)
    _run("ip", "link", "set", host_if, "up")
    _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.213.{subnet}.2/30", "dev", "eth0")
    _run("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
    _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
