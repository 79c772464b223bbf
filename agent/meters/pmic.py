"""Raspberry Pi 5 on-board PMIC through ``vcgencmd pmic_read_adc``.

The PMIC reports current and voltage of its output rails; the sum of V x I over the
rails that report both is the power the board draws after the PMIC, not what it takes
from the wall (regulator losses and USB devices are missing). Samples carry the 5 V
input voltage (EXT5V_V) as ``volts`` when reported. One call takes about 0.1 s.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import ClassVar

from agent.meters.base import Meter, Sample
from tasks.errors import MeterError, MeterProtocolError, MeterTimeout

_LINE = re.compile(
    r"^\s*(?P<rail>\S+)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)=(?P<value>[-+0-9.eE]+)[AV]\s*$"
)
CALL_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class PmicReading:
    """Rails of one ``pmic_read_adc`` call: rail name -> amps / volts."""

    amps: dict[str, float]
    volts: dict[str, float]

    @property
    def power_w(self) -> float:
        """Sum of V x I over the rails that report both."""
        return sum(self.amps[r] * self.volts[r] for r in self.amps if r in self.volts)

    @property
    def rails_with_power(self) -> list[str]:
        return sorted(set(self.amps) & set(self.volts))


def parse_pmic_adc(text: str) -> PmicReading:
    """Parse the output of ``vcgencmd pmic_read_adc``; unrelated lines are ignored."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        target = amps if match["kind"] == "A" else volts
        target[match["rail"]] = float(match["value"])
    return PmicReading(amps=amps, volts=volts)


class Pi5PmicMeter(Meter):
    """Board power of a Raspberry Pi 5 from its PMIC rails."""

    kind = "pi5-pmic"
    scope = "PMIC output power (board rails, not the wall)"
    boundary = "PMIC rails"

    #: options naming places in the file system (checked against the allow-list)
    path_options: ClassVar[dict[str, str]] = {"vcgencmd": "executable"}

    def __init__(self, *, vcgencmd: str | None = None) -> None:
        self.vcgencmd = vcgencmd
        self._exe: str | None = None

    @property
    def nominal_period_s(self) -> float:
        return 0.1

    @property
    def model_name(self) -> str:
        return "Raspberry Pi 5 PMIC (vcgencmd pmic_read_adc)"

    @property
    def description(self) -> str:
        return f"Raspberry Pi 5 PMIC via {self._exe or self.vcgencmd or 'vcgencmd'} ({self.scope})"

    def open(self) -> None:
        """Find vcgencmd and check that this board reports rail currents."""
        exe = self.vcgencmd or shutil.which("vcgencmd")
        if exe is None or shutil.which(exe) is None:
            raise MeterError(
                f"pi5-pmic: vcgencmd not found ({self.vcgencmd or 'not on PATH'})",
                hint="this meter works on a Raspberry Pi 5 with Raspberry Pi OS "
                "(package libraspberrypi-bin); pass vcgencmd=/path if it is elsewhere",
            )
        self._exe = exe
        reading = self._call()
        if not reading.rails_with_power:
            raise MeterError(
                "pi5-pmic: `vcgencmd pmic_read_adc` reports no rail with current and voltage",
                hint="only the Raspberry Pi 5 has a PMIC with current sensing (a Pi 4 needs "
                "an external meter); update the firmware if this is a Pi 5",
            )

    def read(self) -> list[Sample]:
        """Run ``vcgencmd pmic_read_adc`` once; the sample is stamped mid-call."""
        if self._exe is None:
            raise MeterError("pi5-pmic meter is not open")
        t_start = time.monotonic()
        reading = self._call()
        t = (t_start + time.monotonic()) / 2
        if not reading.rails_with_power:
            raise MeterProtocolError("pi5-pmic: pmic_read_adc output had no rails")
        return [Sample(t=t, watts=reading.power_w, volts=reading.volts.get("EXT5V"), amps=None)]

    def close(self) -> None:
        self._exe = None

    def _call(self) -> PmicReading:
        assert self._exe is not None
        try:
            done = subprocess.run(
                [self._exe, "pmic_read_adc"],
                capture_output=True,
                text=True,
                timeout=CALL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise MeterTimeout(
                f"pi5-pmic: vcgencmd did not answer in {CALL_TIMEOUT_S:g} s"
            ) from exc
        except OSError as exc:
            raise MeterError(f"pi5-pmic: cannot run {self._exe}: {exc}") from exc
        if done.returncode != 0:
            raise MeterError(
                f"pi5-pmic: `vcgencmd pmic_read_adc` exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[:200]}",
                hint="the user running the agent needs access to /dev/vcio (group video)",
            )
        return parse_pmic_adc(done.stdout)
