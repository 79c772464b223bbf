"""No meter: energy fields stay empty, and reports say why. Also the ``auto`` choice."""

from __future__ import annotations

from agent.meters.base import Meter, Sample


class NoMeter(Meter):
    """A placeholder for devices without a power meter; ``read()`` returns nothing."""

    kind = "none"
    scope = "none"

    def __init__(self, *, reason: str = "no power meter configured") -> None:
        self.reason = reason

    @property
    def nominal_period_s(self) -> None:
        return None

    @property
    def description(self) -> str:
        return f"no meter: energy is not measured ({self.reason})"

    def open(self) -> None:
        """Nothing to open."""

    def read(self) -> list[Sample]:
        return []

    def close(self) -> None:
        """Nothing to close."""


def auto_meter(*, sysfs_root: str = "/") -> Meter:
    """The meter for the local machine: RAPL when its counter is readable, else none."""
    from agent.meters.rapl import RaplMeter, rapl_unavailable_reason

    reason = rapl_unavailable_reason(sysfs_root)
    if reason is None:
        return RaplMeter(sysfs_root=sysfs_root)
    return NoMeter(reason=f"no readable RAPL counter ({reason.removeprefix('rapl: ')})")


#: options of ``auto`` naming places in the file system (checked against the allow-list)
auto_meter.path_options = {"sysfs_root": "root"}  # type: ignore[attr-defined]
