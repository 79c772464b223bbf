"""The power-meter interface: open, read samples, close.

One module per meter kind implements :class:`Meter`; the registry in
``agent.meters`` maps the ``kind`` string of inventory.yaml to it. Drivers know
nothing of models or queries: the sampler polls them and the agent integrates energy
over query windows afterwards.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Sample:
    """One meter reading. ``t`` is ``time.monotonic()`` seconds when it was taken.

    ``fresh`` is False when the meter returned the same reading as before because it had
    not refreshed yet (slow meters polled faster than they update); such repeats are kept
    for the record but do not count as independent samples.
    """

    t: float
    watts: float | None
    volts: float | None = None
    amps: float | None = None
    fresh: bool = True


class Meter(abc.ABC):
    """A power meter driver."""

    #: the name used in inventory.yaml (``meter: {kind: ...}``)
    kind: ClassVar[str]
    #: what the meter measures, e.g. "USB input power" or "PMIC output power (not wall)"
    scope: ClassVar[str] = "power"

    @property
    @abc.abstractmethod
    def nominal_period_s(self) -> float | None:
        """Seconds between fresh readings the meter can deliver (None: no meter)."""

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Human-readable description: model, port or path, scope."""

    @abc.abstractmethod
    def open(self) -> None:
        """Open the meter; raise MeterError with a clear message when it cannot be used."""

    @abc.abstractmethod
    def read(self) -> list[Sample]:
        """Read what the meter has now: one sample, or several for buffered meters.

        Raise MeterTimeout / MeterProtocolError / MeterError on failure; the sampler
        marks a gap and reconnects.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device. Must be idempotent."""

    def __enter__(self) -> Meter:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
