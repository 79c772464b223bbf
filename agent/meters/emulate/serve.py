"""Serve one emulated meter for other processes: ``tslm-fleet meter emulate``.

The power is constant (``watts``) or follows the CPU use of a user or a process tree
(:mod:`.follow`); ``lag_s`` delays what the meter sees behind the true power, as a slow
sensor or a filtering meter does. The true power goes to ``trace_path`` on the
monotonic clock, so every window the agent reports can be checked against it.

What is served, per family (each keeps the real meter's behaviour):

- ``um24c``, ``um25c``, ``um34c``: a pseudo-terminal speaking the UM protocol; the
  reading refreshes every 0.5 s to the mean of that half second, each request is answered
  after a short delay. Prints the pty path (or ``link``) for ``meter: {port: ...}``.
- ``hwmon``: a fake sysfs tree under ``root`` with an ``ina226`` sensor holding the
  instantaneous power (in follow mode rewritten at each step of the follower, so that a
  reading is a step of the true trace, one follower period late). Prints the root for ``meter: {sysfs_root: ...}``.
- ``rapl``: a fake powercap tree under ``root`` whose counter integrates the power.
- ``pi5-pmic``: a fake ``vcgencmd`` in ``root``, its rails scaled to the instantaneous
  power (rewritten as for hwmon); the driver calls it about ten times a second. Prints its path for
  ``meter: {vcgencmd: ...}``.

FNIRSI testers are USB devices: there is nothing this kernel can serve them on, so they
are refused here (the agent's tests drive the real driver through fake USB endpoints).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agent.meters.emulate.follow import (
    DEFAULT_RATE_HZ,
    DEFAULT_VOLTS,
    TRACE_HEADER,
    CpuFollower,
    StepTrace,
)
from tasks.errors import ConfigError

UM_KINDS = ("um24c", "um25c", "um34c")
KINDS = (*UM_KINDS, "hwmon", "rapl", "pi5-pmic")
#: how often the sysfs and vcgencmd emulators rewrite what they show (seconds)
UPDATE_PERIOD_S = 0.01
#: the largest lag an emulator adds (more is not a meter any more)
MAX_LAG_S = 10.0


class LaggedTrace:
    """``trace`` as a meter with ``lag_s`` of delay sees it."""

    def __init__(self, trace: Any, lag_s: float) -> None:
        self.trace = trace
        self.lag_s = lag_s
        self.volts = trace.volts

    def power_w(self, t: float) -> float:
        return self.trace.power_w(t - self.lag_s)

    def energy_j(self, t0: float, t1: float) -> float:
        return self.trace.energy_j(t0 - self.lag_s, t1 - self.lag_s)


@dataclass
class Emulation:
    """A running emulated meter; ``address`` is what the driver needs; ``stop()`` ends it."""

    kind: str
    address: str
    #: the driver options that reach it, as inventory.yaml would give them
    options: dict[str, str]
    trace: Any
    follower: CpuFollower | None
    _stops: list[Callable[[], None]]

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()

    def __enter__(self) -> Emulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _ConstantTraceFile:
    """The trace file of a constant power: one line at the start, one at the stop."""

    def __init__(self, path: Path, watts: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.watts = watts
        self.fh: TextIO | None = open(path, "a")  # noqa: SIM115 - closed in stop()
        self.fh.write(TRACE_HEADER)
        self.fh.write(f"{time.monotonic():.6f} {watts:.6f}\n")
        self.fh.flush()

    def stop(self) -> None:
        if self.fh is not None:
            self.fh.write(f"{time.monotonic():.6f} {self.watts:.6f}\n")
            self.fh.close()
            self.fh = None


class _Refresher:
    """Calls ``update(now)`` every ``period_s`` in a daemon thread."""

    def __init__(self, update: Callable[[float], None], period_s: float) -> None:
        self.update = update
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="meter-refresh")

    def start(self) -> _Refresher:
        self.update(time.monotonic())
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.update(time.monotonic())
            except OSError:
                pass  # the folder was removed under us; the next write may succeed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def start_emulation(
    kind: str,
    *,
    watts: float | None = None,
    follow_pid: int | None = None,
    follow_user: str | None = None,
    follow_cgroup: str | None = None,
    idle_w: float = 2.0,
    busy_w: float = 1.5,
    rate_hz: float = DEFAULT_RATE_HZ,
    trace_path: str | os.PathLike[str] | None = None,
    lag_s: float = 0.0,
    root: str | os.PathLike[str] | None = None,
    link: str | os.PathLike[str] | None = None,
    world_accessible: bool = False,
    volts: float = DEFAULT_VOLTS,
) -> Emulation:
    """Start serving meter ``kind``; see the module docstring. Raises ConfigError on bad input."""
    if kind.startswith(("fnb", "c1")):
        raise ConfigError(
            f"meter kind {kind!r} is a USB tester: this machine cannot serve a USB device",
            hint="emulate a UM, hwmon, rapl or pi5-pmic meter instead; FNIRSI is checked "
            "through fake USB endpoints in the agent's tests",
        )
    if kind not in KINDS:
        raise ConfigError(
            f"cannot emulate meter kind {kind!r}", hint=f"emulated kinds: {', '.join(KINDS)}"
        )
    modes = sum(x is not None for x in (watts, follow_pid, follow_user, follow_cgroup))
    if modes != 1:
        raise ConfigError(
            "give exactly one of --watts, --follow-pid, --follow-user and --follow-cgroup"
        )
    if watts is not None and watts < 0:
        raise ConfigError(f"--watts must not be negative, not {watts}")
    if not 0.0 <= lag_s <= MAX_LAG_S:
        raise ConfigError(f"--lag must be between 0 and {MAX_LAG_S:g} s, not {lag_s}")
    stops: list[Callable[[], None]] = []
    follower: CpuFollower | None = None
    trace: Any
    try:
        if watts is not None:
            trace = StepTrace(time.monotonic(), watts, volts)
            if trace_path is not None:
                stops.append(_ConstantTraceFile(Path(trace_path), watts).stop)
        else:
            follower = CpuFollower(
                idle_w=idle_w,
                busy_w=busy_w,
                user=follow_user,
                pid=follow_pid,
                cgroup=follow_cgroup,
                rate_hz=rate_hz,
                trace_path=trace_path,
                volts=volts,
            )
            follower.start()
            stops.append(follower.stop)
            trace = follower.trace
        seen = LaggedTrace(trace, lag_s) if lag_s else trace
        # without lag, an instantaneous meter shows each followed step when it is known
        pushed = follower if not lag_s else None
        address, options = _serve(kind, seen, root, link, world_accessible, stops, pushed)
    except BaseException:
        for stop in reversed(stops):
            stop()
        raise
    return Emulation(kind, address, options, trace, follower, stops)


def _refresh_or_push(
    update: Callable[[float], None],
    start: Callable[[], object],
    pushed: CpuFollower | None,
    stops: list[Callable[[], None]],
    stop: Callable[[], None],
) -> None:
    """Show the power through ``update(now)``: at each step of the ``pushed`` follower
    (an instantaneous reading that is never a resampling of the trace), else every
    :data:`UPDATE_PERIOD_S` from a thread (constant power, or a lagged view of it)."""
    if pushed is None:
        start()
        stops.append(stop)
        return
    update(time.monotonic())
    pushed.listeners.append(lambda t_end, _watts: update(t_end))
    stops.append(lambda: pushed.listeners.clear())


def _folder(root: str | os.PathLike[str] | None, stops: list[Callable[[], None]]) -> Path:
    if root is not None:
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        return path
    import shutil

    path = Path(tempfile.mkdtemp(prefix="tslm-meter-"))
    stops.append(lambda: shutil.rmtree(path, ignore_errors=True))
    return path


def _open_up(folder: Path) -> None:
    """Let the device user (another account) read the emulated tree."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)


def _serve(
    kind: str,
    trace: Any,
    root: str | os.PathLike[str] | None,
    link: str | os.PathLike[str] | None,
    world_accessible: bool,
    stops: list[Callable[[], None]],
    pushed: CpuFollower | None = None,
) -> tuple[str, dict[str, str]]:
    if kind in UM_KINDS:
        from agent.meters.emulate.um import UmEmulator

        um = UmEmulator(kind, trace, t0=0.0, link=link, world_accessible=world_accessible)
        um.start()
        stops.append(um.stop)
        return um.port, {"port": um.port}
    folder = _folder(root, stops)
    if kind == "hwmon":
        from agent.meters.emulate.sysfs import FakeHwmon

        sensor = FakeHwmon(folder, trace, name="ina226", t0=0.0, period_s=UPDATE_PERIOD_S)
        _refresh_or_push(sensor.update, sensor.start, pushed, stops, sensor.stop)
        if world_accessible:
            _open_up(folder)
        return str(folder), {"hwmon_name": "ina226", "sysfs_root": str(folder)}
    if kind == "rapl":
        from agent.meters.emulate.sysfs import FakeRapl

        rapl = FakeRapl(folder, trace, t0=0.0, period_s=0.001)  # the counter ticks each ms
        rapl.start()
        stops.append(rapl.stop)
        if world_accessible:
            _open_up(folder)
        return str(folder), {"sysfs_root": str(folder)}
    from agent.meters.emulate import vcgencmd

    script = vcgencmd.install_fast(folder)
    base = vcgencmd.expected_power_w(1.0)

    def update(now: float) -> None:
        vcgencmd.write_pmic(folder, trace.power_w(now) / base)

    refresher = _Refresher(update, UPDATE_PERIOD_S)
    _refresh_or_push(update, refresher.start, pushed, stops, refresher.stop)
    if world_accessible:
        _open_up(folder)
    return str(script), {"vcgencmd": str(script)}
