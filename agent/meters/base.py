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
    #: the measurement boundary, short: "USB input", "PMIC rails", "wall", "CPU package"
    #: (None: nothing is measured)
    boundary: ClassVar[str | None] = None

    @property
    @abc.abstractmethod
    def nominal_period_s(self) -> float | None:
        """Seconds between fresh readings the meter can deliver (None: no meter)."""

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Human-readable description: model, port or path, scope."""

    @property
    def model_name(self) -> str:
        """The meter's make and model (the kind when the driver knows no better)."""
        return self.kind

    @property
    def firmware(self) -> str | None:
        """The meter's firmware version where its protocol reports one, else None."""
        return None

    @property
    def poll_period_s(self) -> float | None:
        """Seconds between two ``read()`` calls the sampler should aim for.

        Defaults to the nominal period. Slow meters that are polled for their refresh
        (the UM series) poll faster than they refresh; meters whose ``read()`` blocks
        until the device has data return 0.
        """
        return self.nominal_period_s

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


class RepeatDetector:
    """Tells fresh readings from repeats of a meter that refreshes every ``refresh_s``.

    A reading whose raw content differs from the previous one is fresh. An identical
    reading counts as a repeat unless the last fresh one is older than 1.5 refresh
    periods: then the meter has refreshed with an unchanged value. The margin errs on
    the side of counting too few fresh samples (which flags a window as under-resolved)
    rather than too many.
    """

    def __init__(self, refresh_s: float) -> None:
        self.refresh_s = refresh_s
        self._last_key: object = None
        self._last_fresh_t: float | None = None

    def is_fresh(self, key: object, t: float) -> bool:
        """Record a reading (``key``: its raw content) taken at ``t``; True if fresh."""
        fresh = (
            self._last_fresh_t is None
            or key != self._last_key
            or t - self._last_fresh_t >= 1.5 * self.refresh_s
        )
        self._last_key = key
        if fresh:
            self._last_fresh_t = t
        return fresh

    def reset(self) -> None:
        """Forget the last reading (after a reconnect)."""
        self._last_key = None
        self._last_fresh_t = None
