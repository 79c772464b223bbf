"""The background sampler with real drivers on emulated meters."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.meters import create_meter
from agent.meters.base import Sample
from agent.meters.emulate import vcgencmd
from agent.meters.emulate.fnirsi import FakeFnirsi
from agent.meters.emulate.sysfs import FakeHwmon
from agent.meters.emulate.traces import constant, steps
from agent.sampler import Sampler, _Ring
from tasks.errors import MeterError


def test_ring_keeps_the_newest_in_order() -> None:
    ring = _Ring(3)
    for i in range(5):
        ring.append(Sample(t=float(i), watts=float(i)))
    assert [ring[i].t for i in range(len(ring))] == [2.0, 3.0, 4.0]


def test_hwmon_is_sampled_at_100_hz_and_windows_match_the_trace(tmp_path: Path) -> None:
    trace = steps([(0.0, 2.0), (0.6, 5.0), (1.1, 3.0)])
    with FakeHwmon(tmp_path, trace, period_s=0.001) as fake:
        sampler = Sampler(
            create_meter("hwmon", hwmon_name="ina226", sysfs_root=str(tmp_path)), period_s=0.005
        )
        with sampler:
            time.sleep(1.5)
    stats = sampler.stats()
    assert stats.achieved_rate_hz >= 100 and stats.fresh == stats.total
    assert not stats.running and stats.gaps == 0
    t0, t1 = fake.t0 + 0.3, fake.t0 + 1.3
    window = sampler.window(t0, t1)
    assert window.energy_j == pytest.approx(trace.energy_j(0.3, 1.3), rel=0.02)
    assert not window.under_resolved
    assert window.fresh_samples == len(sampler.samples(t0, t1))
    assert sampler.latest() is sampler.samples()[-1]


def test_capacity_bounds_memory(tmp_path: Path) -> None:
    with FakeHwmon(tmp_path, constant(1.0)):
        meter = create_meter("hwmon", hwmon_name="ina226", sysfs_root=str(tmp_path))
        with Sampler(meter, period_s=0.002, capacity=50) as sampler:
            deadline = time.monotonic() + 10
            while sampler.stats().total <= 60 and time.monotonic() < deadline:
                time.sleep(0.05)
    assert len(sampler.samples()) == 50
    assert sampler.stats().total > 50


def test_stop_is_idempotent_and_closes_the_meter(tmp_path: Path) -> None:
    device = FakeFnirsi("fnb58", constant(2.0))
    sampler = Sampler(create_meter("fnb58", endpoints=device.endpoints))
    sampler.start()
    time.sleep(0.2)
    sampler.stop()
    sampler.stop()
    count = sampler.stats().total
    time.sleep(0.1)
    assert sampler.stats().total == count >= 12


def test_open_failure_raises_or_becomes_a_gap(tmp_path: Path) -> None:
    meter = create_meter("hwmon", hwmon_name="ina226", sysfs_root=str(tmp_path))
    with pytest.raises(MeterError, match="no device named"):
        Sampler(meter).start()
    events: list[tuple[str, str]] = []
    sampler = Sampler(meter, period_s=0.01, on_event=lambda *e: events.append(e))
    sampler.start(require_open=False)
    try:
        time.sleep(0.3)
        assert sampler.stats().in_gap
        fake = FakeHwmon(tmp_path, constant(2.0))
        fake.update(time.monotonic())
        deadline = time.monotonic() + 3
        while sampler.stats().in_gap and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not sampler.stats().in_gap
    finally:
        sampler.stop()
    assert len(events) == 1 and events[0][0] == "warning"


def test_vanishing_sensor_gives_one_warning_and_a_closed_gap(tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []
    with FakeHwmon(tmp_path, constant(2.0)) as fake:
        meter = create_meter("hwmon", hwmon_name="ina226", sysfs_root=str(tmp_path))
        with Sampler(meter, period_s=0.01, on_event=lambda *e: events.append(e)) as sampler:
            time.sleep(0.2)
            fake.remove()
            t_gone = time.monotonic()
            time.sleep(0.8)  # several failed reconnects, still a single warning
            fake.restore()
            time.sleep(0.8)
    assert len(events) == 1 and "read failed" in events[0][1]
    (gap,) = sampler.gaps()
    assert gap.end_t is not None and gap.start_t <= t_gone <= gap.end_t
    assert sampler.stats().read_errors >= 2
    across = sampler.window(t_gone - 0.1, t_gone + 0.5)
    assert across.gap and across.under_resolved
    after = sampler.window(gap.end_t + 0.1, gap.end_t + 0.5)
    assert not after.gap and after.energy_j == pytest.approx(0.8, rel=0.01)


def test_slow_meter_never_blocks_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    vcgencmd.install(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    with Sampler(create_meter("pi5-pmic")) as sampler:
        vcgencmd.write_state(bin_dir, {"delay_s": 1.0})
        time.sleep(0.3)  # the thread is now inside a 1-s vcgencmd call
        started = time.monotonic()
        sampler.samples()
        sampler.window(started - 1, started)
        sampler.stats()
        sampler.latest()
        assert time.monotonic() - started < 0.05


def test_wait_for_a_sample_after_the_window(tmp_path: Path) -> None:
    with FakeHwmon(tmp_path, constant(1.0)):
        meter = create_meter("hwmon", hwmon_name="ina226", sysfs_root=str(tmp_path))
        with Sampler(meter, period_s=0.05) as sampler:
            t = time.monotonic()
            assert sampler.wait_for(t, timeout_s=1.0)
            assert sampler.samples(t)
        assert not sampler.wait_for(time.monotonic(), timeout_s=0.1)


def test_no_meter_gives_no_energy() -> None:
    with Sampler(create_meter("none")) as sampler:
        time.sleep(0.05)
        window = sampler.window(time.monotonic() - 0.05, time.monotonic())
    assert window.energy_j is None and window.fresh_samples == 0
    assert sampler.stats().total == 0
