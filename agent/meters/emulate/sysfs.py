"""Fake sysfs trees for the hwmon and RAPL drivers, updated from a trace by a thread.

The tree lives under a temporary ``root`` (the drivers' ``sysfs_root`` option):
``root/sys/class/hwmon/hwmonN/{name,power1_input,curr1_input,in1_input}`` and
``root/sys/class/powercap/intel-rapl:0/{name,energy_uj,max_energy_range_uj}``.
Values are replaced atomically (write then rename), so a reader never sees half a number.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from agent.meters.emulate.traces import PowerTrace


def _write(path: Path, value: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)


class _Updater:
    """Rewrites the files every ``period_s`` from the trace in a daemon thread."""

    def __init__(self, trace: PowerTrace, t0: float | None, period_s: float) -> None:
        self.trace = trace
        self.t0 = time.monotonic() if t0 is None else t0
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.paused = False

    def update(self, now: float) -> None:
        raise NotImplementedError

    def start(self) -> _Updater:
        self.update(time.monotonic())
        self._thread = threading.Thread(target=self._loop, daemon=True, name=type(self).__name__)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            if not self.paused:
                try:
                    self.update(time.monotonic())
                except OSError:
                    pass  # the tree was removed on purpose (sensor gone)

    def __enter__(self) -> _Updater:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeHwmon(_Updater):
    """One hwmon device named ``name`` with the given channels.

    ``channels``: any of "power1" (uW), "curr1" (mA), "in0"/"in1" (mV). Values are
    integers as the kernel writes them.
    """

    def __init__(
        self,
        root: Path,
        trace: PowerTrace,
        *,
        name: str = "ina226",
        index: int = 0,
        channels: tuple[str, ...] = ("power1", "curr1", "in1"),
        update_interval_ms: int | None = None,
        t0: float | None = None,
        period_s: float = 0.002,
    ) -> None:
        super().__init__(trace, t0, period_s)
        self.root = Path(root)
        self.name = name
        self.channels = channels
        self.dir = self.root / "sys/class/hwmon" / f"hwmon{index}"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "name").write_text(name + "\n")
        if update_interval_ms is not None:
            (self.dir / "update_interval").write_text(f"{update_interval_ms}\n")

    def update(self, now: float) -> None:
        rel = now - self.t0
        watts = self.trace.power_w(rel)
        volts = self.trace.volts
        values = {
            "power1": round(watts * 1e6),
            "curr1": round(watts / volts * 1000),
            "in1": round(volts * 1000),
            "in0": round(volts * 1000),
        }
        for channel in self.channels:
            _write(self.dir / f"{channel}_input", str(values[channel]))

    def remove(self) -> None:
        """The sensor disappears (driver unbound)."""
        self.paused = True
        shutil.rmtree(self.dir, ignore_errors=True)

    def restore(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "name").write_text(self.name + "\n")
        self.update(time.monotonic())
        self.paused = False


class FakeRapl(_Updater):
    """A RAPL package domain whose counter integrates the trace and wraps."""

    def __init__(
        self,
        root: Path,
        trace: PowerTrace,
        *,
        domain: str = "intel-rapl:0",
        max_energy_range_uj: int = 262_143_328_850,
        start_uj: int = 0,
        t0: float | None = None,
        period_s: float = 0.001,
    ) -> None:
        super().__init__(trace, t0, period_s)
        self.range_uj = max_energy_range_uj
        self.start_uj = start_uj
        self.dir = Path(root) / "sys/class/powercap" / domain
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "name").write_text("package-0\n")
        (self.dir / "max_energy_range_uj").write_text(f"{max_energy_range_uj}\n")
        self.wraps = 0

    def counter_uj(self, now: float) -> int:
        total = self.start_uj + self.trace.energy_j(0.0, max(now - self.t0, 0.0)) * 1e6
        self.wraps = int(total // self.range_uj)
        return int(total % self.range_uj)

    def update(self, now: float) -> None:
        _write(self.dir / "energy_uj", str(self.counter_uj(now)))

    def make_unreadable(self) -> None:
        """Deny reads of energy_uj, as Linux >= 5.10 does for non-root users.

        Mode 0000 so that even a root-owned process is refused once it runs without
        CAP_DAC_OVERRIDE (the tests run the reader that way when they are root).
        """
        self.paused = True
        (self.dir / "energy_uj").chmod(0o000)
