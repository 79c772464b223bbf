"""Any Linux hwmon power source: INA219/226/260 on I2C, the KM003C ``powerz`` driver, ...

The device is found by the content of its ``name`` file under /sys/class/hwmon (or given
by ``path``). Power comes from ``power1_input`` (microwatts) when the chip has it,
otherwise from ``curr1_input`` (mA) times the bus voltage (``in1_input``, else
``in0_input``, in mV).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import ClassVar

from agent.meters.base import Meter, RepeatDetector, Sample
from tasks.errors import MeterError

#: poll period when the chip does not publish ``update_interval``
DEFAULT_PERIOD_S = 0.01


def _read_number(path: Path | str) -> float:
    # os-level calls: this runs 100 times a second for each channel
    fd = os.open(path, os.O_RDONLY)
    try:
        return float(os.read(fd, 64))
    finally:
        os.close(fd)


def find_hwmon(root: Path, name: str) -> list[Path]:
    """hwmon directories under ``root``/sys/class/hwmon whose ``name`` file is ``name``."""
    base = root / "sys/class/hwmon"
    found = []
    for entry in sorted(base.glob("hwmon*")):
        try:
            if (entry / "name").read_text().strip() == name:
                found.append(entry)
        except OSError:
            continue
    return found


class HwmonMeter(Meter):
    """Power, current and voltage read from one hwmon device."""

    kind = "hwmon"
    scope = "power measured by the hwmon sensor"
    boundary = "hwmon sensor rail"
    #: at least one of these options names the sensor (checked with the inventory)
    required_one_of: ClassVar[tuple[str, ...]] = ("hwmon_name", "path")
    #: options naming places in the file system (checked against the allow-list)
    path_options: ClassVar[dict[str, str]] = {"sysfs_root": "root", "path": "below_root"}

    def __init__(
        self,
        *,
        hwmon_name: str | None = None,
        path: str | None = None,
        sysfs_root: str = "/",
    ) -> None:
        if hwmon_name is None and path is None:
            raise MeterError(
                "meter 'hwmon' needs the option hwmon_name (or path)",
                hint="e.g. meter: {kind: hwmon, hwmon_name: ina226}; "
                "list names with `cat /sys/class/hwmon/*/name`",
            )
        self.hwmon_name = hwmon_name
        self.path = path
        self.sysfs_root = Path(sysfs_root)
        self._dir: Path | None = None
        self._power: Path | None = None
        self._curr: Path | None = None
        self._volt: Path | None = None
        self._period_s = DEFAULT_PERIOD_S
        self._repeats: RepeatDetector | None = None
        self._open = False
        self._files: tuple[str | None, ...] = (None, None, None)

    @property
    def nominal_period_s(self) -> float:
        return self._period_s

    @property
    def description(self) -> str:
        where = self._dir or self.path or "/sys/class/hwmon"
        name = f" {self.hwmon_name}" if self.hwmon_name else ""
        return f"hwmon{name} at {where} ({self.scope})"

    def open(self) -> None:
        """Locate the device and the channels it offers."""
        if self.path is not None:
            directory = Path(self.path)
            if not directory.is_absolute():
                directory = self.sysfs_root / directory
            if not (directory / "name").exists():
                raise MeterError(f"hwmon: {directory} is not a hwmon device (no name file)")
        else:
            matches = find_hwmon(self.sysfs_root, self.hwmon_name or "")
            if not matches:
                names = sorted(
                    {
                        (p / "name").read_text().strip()
                        for p in (self.sysfs_root / "sys/class/hwmon").glob("hwmon*")
                        if (p / "name").exists()
                    }
                )
                raise MeterError(
                    f"hwmon: no device named {self.hwmon_name!r}",
                    hint=f"available: {', '.join(names) or 'none'}; load the driver "
                    "(e.g. an ina2xx device-tree overlay) or pass path=",
                )
            if len(matches) > 1:
                raise MeterError(
                    f"hwmon: {len(matches)} devices named {self.hwmon_name!r}: "
                    f"{', '.join(str(m) for m in matches)}",
                    hint="choose one with the option path",
                )
            directory = matches[0]
        self._dir = directory
        self._open = True

        def channel(*names: str) -> Path | None:
            return next((directory / n for n in names if (directory / n).exists()), None)

        self._power = channel("power1_input")
        self._curr = channel("curr1_input")
        self._volt = channel("in1_input", "in0_input")
        self._files = tuple(str(p) if p else None for p in (self._power, self._curr, self._volt))
        if self._power is None and (self._curr is None or self._volt is None):
            raise MeterError(
                f"hwmon: {directory} has neither power1_input nor curr1_input with a voltage",
                hint="this sensor cannot measure power; pick another hwmon device",
            )
        interval = channel("update_interval")
        self._repeats = None
        if interval is not None:
            try:
                self._period_s = max(_read_number(interval) / 1000, 0.001)
                self._repeats = RepeatDetector(self._period_s)
            except (OSError, ValueError):
                self._period_s = DEFAULT_PERIOD_S
        self.read()  # fail now, with a clear message, if the files cannot be read

    def read(self) -> list[Sample]:
        """Read the channels once."""
        if not self._open:
            raise MeterError("hwmon meter is not open")
        t = time.monotonic()
        power_file, curr_file, volt_file = self._files
        try:
            volts = _read_number(volt_file) / 1000 if volt_file else None
            amps = _read_number(curr_file) / 1000 if curr_file else None
            if power_file is not None:
                watts = _read_number(power_file) / 1e6
            else:
                watts = (volts or 0.0) * (amps or 0.0)
        except PermissionError as exc:
            raise MeterError(
                f"hwmon: permission denied reading {exc.filename}",
                hint="run the agent as a user that may read the sensor",
            ) from exc
        except (OSError, ValueError) as exc:
            raise MeterError(
                f"hwmon {self._dir}: read failed: {exc}", hint="the sensor or its driver went away"
            ) from exc
        fresh = True if self._repeats is None else self._repeats.is_fresh((watts, volts, amps), t)
        return [Sample(t=t, watts=watts, volts=volts, amps=amps, fresh=fresh)]

    def close(self) -> None:
        self._open = False
