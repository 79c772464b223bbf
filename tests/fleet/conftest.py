"""Fixtures that stand up fake devices (real sshd per device); see testbed/fleet.py."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import prerequisites
from testbed.faults import MATRIX, SESSION_DEFAULT, SUMMARY_ENV, crash_reason, table_rows
from testbed.fleet import FakeFleet, build_fleet, fleet_unavailable_reason

DEFAULT_NAMES = ("pi4", "pi5", "pi3", "pi2", "pi1", "pi0")

FleetFactory = Callable[..., FakeFleet]


@pytest.fixture(scope="session")
def fleet_support() -> None:
    """Skip (with the reason) where fake devices cannot be built, or fail under
    TSLM_STRICT_SKIPS=1; checked once."""
    reason = fleet_unavailable_reason()
    if reason:
        prerequisites.missing(reason)


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


# --------------------------------------------------------------------------- fault matrix


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Record each ``@pytest.mark.fault`` test from pytest's own reports (testbed.faults)."""
    report = yield
    marker = item.get_closest_marker("fault")
    if marker is None:
        return report
    if report.when == "setup":
        params = getattr(getattr(item, "callspec", None), "params", {})
        path, line, _ = item.location
        MATRIX.start(
            item.nodeid,
            marker.args[0].format(**params),
            marker.kwargs.get("expected", ""),
            order=(path, line or 0),
        )
    reason = crash_reason(report.longrepr) if report.outcome != "passed" else ""
    MATRIX.report(item.nodeid, report.when, report.outcome, reason, report.duration)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not MATRIX.records:
        return
    doc = MATRIX.document()
    terminalreporter.section("fleet fault matrix")
    for row in table_rows(doc):
        terminalreporter.write_line(row)
    target = Path(os.environ.get(SUMMARY_ENV) or SESSION_DEFAULT)
    MATRIX.write(target)
    terminalreporter.write_line(
        f"{doc['survived']} of {doc['injected']} faults survived; written to {target} "
        "(python -m testbed.faults --from FILE renders it into README.md)"
    )
