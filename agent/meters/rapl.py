"""Intel / AMD RAPL energy counters through the Linux powercap interface.

``energy_uj`` counts microjoules and wraps at ``max_energy_range_uj``. Each sample is
the mean power between two reads, stamped at the middle of that interval. Since Linux
5.10 the counters are readable by root only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import ClassVar

from agent.meters.base import Meter, Sample
from tasks.errors import MeterError

POWERCAP = "sys/class/powercap"
DEFAULT_PERIOD_S = 0.01


class RaplMeter(Meter):
    """Power of one RAPL domain (default: CPU package 0)."""

    kind = "rapl"
    scope = "CPU package power (RAPL), not the wall"
    boundary = "CPU package"

    #: options naming places in the file system (checked against the allow-list)
    path_options: ClassVar[dict[str, str]] = {"sysfs_root": "root"}

    def __init__(
        self,
        *,
        domain: str = "intel-rapl:0",
        sysfs_root: str = "/",
        period_s: float = DEFAULT_PERIOD_S,
        max_power_w: float = 2000.0,
    ) -> None:
        self.domain = domain
        self.sysfs_root = Path(sysfs_root)
        self._period_s = period_s
        #: above this power the counter could wrap twice between reads unnoticed
        self.max_power_w = max_power_w
        self._dir: Path | None = None
        self._range_uj = 0
        self._last: tuple[float, int] | None = None
        self._energy_file = ""

    @property
    def nominal_period_s(self) -> float:
        return self._period_s

    @property
    def description(self) -> str:
        return f"RAPL {self.domain} at {self._dir or self.sysfs_root / POWERCAP} ({self.scope})"

    def locate(self) -> Path:
        """The powercap directory of the domain (by directory name or by its ``name`` file)."""
        base = self.sysfs_root / POWERCAP
        direct = base / self.domain
        if (direct / "energy_uj").exists():
            return direct
        for entry in sorted(base.glob("*rapl*")):
            try:
                if (entry / "name").read_text().strip() == self.domain:
                    return entry
            except OSError:
                continue
        raise MeterError(
            f"rapl: no powercap domain {self.domain!r} under {base}",
            hint="RAPL exists on x86 machines with the intel_rapl driver loaded "
            "(modprobe intel_rapl_common); on other boards use another meter",
        )

    def open(self) -> None:
        """Check that the counter exists and can be read."""
        self._dir = self.locate()
        self._range_uj = self._read("max_energy_range_uj")
        self._last = None
        self._energy_file = str(self._dir / "energy_uj")
        self._last = (time.monotonic(), self._read_energy())

    def read(self) -> list[Sample]:
        """Mean power since the previous read."""
        if self._dir is None or self._last is None:
            raise MeterError("rapl meter is not open")
        t = time.monotonic()
        energy = self._read_energy()
        t_prev, e_prev = self._last
        self._last = (t, energy)
        dt = t - t_prev
        if dt <= 0:
            return []
        delta = energy - e_prev
        if delta < 0:
            delta += self._range_uj
        if self.max_power_w * dt * 1e6 >= self._range_uj:
            raise MeterError(
                f"rapl: {dt:.1f} s between two reads; the counter may have wrapped more "
                "than once, so this interval is not measured",
                hint="sample more often (a shorter period)",
            )
        return [Sample(t=(t + t_prev) / 2, watts=delta / 1e6 / dt)]

    def close(self) -> None:
        self._dir = None
        self._last = None

    def _read_energy(self) -> int:
        # os-level calls: this runs 100 times a second
        try:
            fd = os.open(self._energy_file, os.O_RDONLY)
            try:
                return int(os.read(fd, 64))
            finally:
                os.close(fd)
        except (OSError, ValueError):
            return self._read("energy_uj")  # the slow path says what went wrong

    def _read(self, name: str) -> int:
        assert self._dir is not None
        path = self._dir / name
        try:
            return int(path.read_text().strip())
        except PermissionError as exc:
            raise MeterError(
                f"rapl: {path} is readable by root only (Linux 5.10 and later)",
                hint=f"run the agent as root, or `sudo chmod a+r {path}` (until the next "
                "reboot), or use meter kind 'none'",
            ) from exc
        except (OSError, ValueError) as exc:
            raise MeterError(f"rapl: cannot read {path}: {exc}") from exc


def rapl_unavailable_reason(sysfs_root: str = "/", domain: str = "intel-rapl:0") -> str | None:
    """None when the RAPL counter can be read, else why not (for ``auto``)."""
    meter = RaplMeter(domain=domain, sysfs_root=sysfs_root)
    try:
        meter.open()
    except MeterError as exc:
        return exc.message
    finally:
        meter.close()
    return None
