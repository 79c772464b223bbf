"""Fixtures that stand up fake devices (real sshd per device); see testbed/fleet.py."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.fleet import FakeFleet, build_fleet, fleet_unavailable_reason
from tests.fleet.harness import SUMMARY, SUMMARY_ENV, FaultSummary

DEFAULT_NAMES = ("pi4", "pi5", "pi3", "pi2", "pi1", "pi0")

FleetFactory = Callable[..., FakeFleet]


@pytest.fixture(scope="session")
def fleet_support() -> None:
    """Skip (with the reason) where fake devices cannot be built; checked once."""
    reason = fleet_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def fleet_factory(
    fleet_support: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetFactory]:
    """``fleet_factory(n, meters=[...], names=[...], workdir=..., overrides={...}, netns=False)``.

    Builds ``n`` fake devices (named pi4, pi5, ... unless ``names``) and their
    inventory.yaml; everything is torn down after the test, failed or not.
    """
    fleets: list[FakeFleet] = []

    def make(
        n: int = 2,
        *,
        meters: list[dict[str, Any] | None] | None = None,
        names: list[str] | None = None,
        workdir: str = "~/.tslm",
        overrides: dict[str, dict[str, Any]] | None = None,
        netns: bool = False,
    ) -> FakeFleet:
        chosen = list(names) if names else list(DEFAULT_NAMES[:n])
        root = tmp_path_factory.mktemp("fleet")
        fleet = build_fleet(
            Path(root), chosen, meters=meters, workdir=workdir, overrides=overrides, netns=netns
        )
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


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="session")
def tiny_model(fleet_support: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded LLaMA (random weights) saved once for the whole session."""
    from testbed.models import save_tiny_model

    target = tmp_path_factory.mktemp("fleet-model") / "tiny-llama"
    save_tiny_model(target)
    return target


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the device users can read (the pytest temp base is closed to them):
    meter port links and fake sysfs trees live here."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="tslm-fleet-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def um25c(shared_dir: Path) -> Iterator[Any]:
    """A UM25C on a world-accessible pty showing a constant 2.5 W (port: ``.port``)."""
    from agent.meters.emulate.traces import constant
    from agent.meters.emulate.um import UmEmulator

    emulator = UmEmulator(
        "um25c", constant(2.5), link=shared_dir / "rfcomm0", world_accessible=True
    )
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def hwmon(shared_dir: Path) -> Iterator[Any]:
    """A fake hwmon sysfs tree (ina226, constant 4.0 W) kept fresh by a background thread."""
    from agent.meters.emulate.sysfs import FakeHwmon
    from agent.meters.emulate.traces import constant

    sensor = FakeHwmon(shared_dir / "sysfs", constant(4.0), name="ina226")
    for folder in [shared_dir / "sysfs", *(shared_dir / "sysfs").rglob("*")]:
        if folder.is_dir():
            folder.chmod(0o755)
    with sensor:
        yield sensor


@pytest.fixture
def fault_summary() -> FaultSummary:
    """The session's fault-matrix summary (printed at the end; see harness.FaultSummary)."""
    return SUMMARY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not SUMMARY.records:
        return
    terminalreporter.section("fleet fault matrix")
    for line in SUMMARY.lines():
        terminalreporter.write_line(line)
    target = os.environ.get(SUMMARY_ENV)
    if target:
        SUMMARY.write(target)
        terminalreporter.write_line(f"written to {target}")
