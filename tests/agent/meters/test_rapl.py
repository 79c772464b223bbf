"""RAPL: power from the energy counter, wrap-around, root-only counters."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.meters import create_meter
from agent.meters.emulate.sysfs import FakeRapl
from agent.meters.emulate.traces import constant
from agent.meters.rapl import RaplMeter
from tasks.errors import MeterError
from tests.agent.meters.conftest import run_without_file_override


def test_power_is_the_counter_rate(tmp_path: Path) -> None:
    fake = FakeRapl(tmp_path, constant(12.0))
    meter = create_meter("rapl", sysfs_root=str(tmp_path))
    with fake, meter:
        samples = []
        for _ in range(20):
            time.sleep(0.02)
            samples += meter.read()
    mean = sum(s.watts for s in samples) / len(samples)  # type: ignore[misc]
    assert mean == pytest.approx(12.0, rel=0.1)


def test_counter_wrap_is_handled(tmp_path: Path) -> None:
    fake = FakeRapl(
        tmp_path, constant(10.0), max_energy_range_uj=5_000_000, start_uj=4_000_000, period_s=0.001
    )
    with fake, create_meter("rapl", sysfs_root=str(tmp_path), max_power_w=100.0) as meter:
        samples = []
        started = time.monotonic()
        while time.monotonic() - started < 0.3:
            time.sleep(0.01)
            samples += meter.read()
        assert fake.wraps >= 1
    assert all(s.watts is not None and 0 <= s.watts < 100 for s in samples)
    mean = sum(s.watts for s in samples) / len(samples)  # type: ignore[misc]
    assert mean == pytest.approx(10.0, rel=0.15)


def test_a_possible_double_wrap_is_refused(tmp_path: Path) -> None:
    FakeRapl(tmp_path, constant(10.0), max_energy_range_uj=1_000_000).update(time.monotonic())
    meter = RaplMeter(sysfs_root=str(tmp_path), max_power_w=100.0)
    with meter:
        time.sleep(0.02)  # 100 W for 20 ms could be two whole wraps of a 1 J counter
        with pytest.raises(MeterError, match="wrapped more than once"):
            meter.read()


def test_domain_by_name(tmp_path: Path) -> None:
    FakeRapl(tmp_path, constant(5.0)).update(time.monotonic())
    with create_meter("rapl", sysfs_root=str(tmp_path), domain="package-0") as meter:
        assert "intel-rapl:0" in meter.description


def test_missing_rapl_is_explained(tmp_path: Path) -> None:
    with pytest.raises(MeterError, match="no powercap domain") as info:
        create_meter("rapl", sysfs_root=str(tmp_path)).open()
    assert "intel_rapl" in (info.value.hint or "")


def test_root_only_counter_says_so_and_auto_falls_back(tmp_path: Path) -> None:
    fake = FakeRapl(tmp_path, constant(5.0))
    fake.update(time.monotonic())
    fake.make_unreadable()
    code = f"""
from agent.meters import create_meter
from tasks.errors import MeterError
try:
    create_meter("rapl", sysfs_root={str(tmp_path)!r}).open()
except MeterError as exc:
    print("ERROR", exc.message, "HINT", exc.hint)
print("AUTO", create_meter("auto", sysfs_root={str(tmp_path)!r}).description)
"""
    out = run_without_file_override(code)
    assert out.returncode == 0, out.stderr
    assert "readable by root only" in out.stdout and "chmod a+r" in out.stdout
    assert "AUTO no meter" in out.stdout and "root only" in out.stdout


def test_auto_picks_rapl_when_readable(tmp_path: Path) -> None:
    FakeRapl(tmp_path, constant(5.0)).update(time.monotonic())
    assert isinstance(create_meter("auto", sysfs_root=str(tmp_path)), RaplMeter)
