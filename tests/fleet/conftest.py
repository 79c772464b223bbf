"""Fixtures that stand up fake devices (real sshd per device); see tests/fleet/devices.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.devices import FakeFleet, build_fleet, fleet_unavailable_reason

DEFAULT_NAMES = ("pi4", "pi5", "pi3", "pi2", "pi1", "pi0")

FleetFactory = Callable[..., FakeFleet]


@pytest.fixture(scope="session")
def fleet_support() -> None:
    """Skip (with the reason) where fake devices cannot be built; checked once."""
    reason = fleet_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def fleet_factory(fleet_support: None, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[FleetFactory]:
    """``fleet_factory(n, meters=[...], names=[...], workdir=..., overrides={...})``.

    Builds ``n`` fake devices (named pi4, pi5, ... unless ``names``) and their
    inventory.yaml; everything is torn down after the test, failed or not.
    """
    fleets: list[FakeFleet] = []

    def make(n: int = 2, *, meters: list[dict[str, Any] | None] | None = None,
             names: list[str] | None = None, workdir: str = "~/.tslm",
             overrides: dict[str, dict[str, Any]] | None = None) -> FakeFleet:
        chosen = list(names) if names else list(DEFAULT_NAMES[:n])
        root = tmp_path_factory.mktemp("fleet")
        fleet = build_fleet(Path(root), chosen, meters=meters, workdir=workdir,
                            overrides=overrides)
        fleets.append(fleet)
        return fleet

    try:
        yield make
    finally:
        for fleet in fleets:
            fleet.close()


@pytest.fixture
def fake_fleet(fleet_factory: FleetFactory) -> FakeFleet:
    """Two fake devices, pi4 and pi5, with their inventory.yaml."""
    return fleet_factory(2)
