"""The documented error bound of each meter family against load-following ground truth.

Product code reads it (every trial's provenance names the bound of its meter); the
tests and the ``truth`` benchmark (``testbed/truth.py``, ``bench/bench_truth.py``) hold
the measured errors to it. Standard library only: it travels to the devices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Bound:
    """The documented error bound of a meter family at a window length."""

    family: str
    window_s: float
    energy: float  # relative error of a window's energy
    idle: float  # relative error of the idle baseline

    @property
    def net(self) -> float:
        """Net energy (relative to the window's energy): twice the energy bound."""
        return 2 * self.energy

    def to_dict(self) -> dict[str, Any]:
        """The bound as provenance records it (relative errors as fractions)."""
        return {**asdict(self), "net": self.net}


#: meter kind -> its bound; measured on a shared 2-core machine under a load average of
#: 10 to 15, where a busy query gets a ragged part of a core and the power jumps every few
#: milliseconds: an instantaneous 10 Hz meter then sees ten random draws a second (the
#: figures behind the bounds: bench/bench_truth.py). The PMIC is read about ten times
#: a second and each reading is instantaneous, so a 1 s window can misplace up to one
#: sample period (0.1 s) of a full busy/idle step (3 W) at each of its two edges: 0.6 J
#: against the ~2.8 J of a window, ~20 %. Runs here reached 9.8 % and 12.5 %.
BOUNDS: dict[str, Bound] = {
    "hwmon": Bound("hwmon", 1.0, 0.04, 0.02),
    "pi5-pmic": Bound("Pi 5 PMIC", 1.0, 0.20, 0.03),
    "um25c": Bound("RDTech UM", 5.0, 0.05, 0.05),
}


def bound_for(kind: str) -> Bound | None:
    """The bound of meter ``kind``; None when no ground-truth run has documented one."""
    return BOUNDS.get(kind)
