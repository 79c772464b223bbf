"""hwmon: device lookup by name, channel choice, failures, against a fake sysfs tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.meters import create_meter
from agent.meters.emulate.sysfs import FakeHwmon
from agent.meters.emulate.traces import constant
from tasks.errors import ConfigError, MeterError


def test_power_channel_is_read_in_watts(tmp_path: Path) -> None:
    with FakeHwmon(tmp_path, constant(3.25), name="ina260"):
        FakeHwmon(tmp_path, constant(9.0), name="cpu_thermal", index=1, channels=("in0",))
        with create_meter("hwmon", hwmon_name="ina260", sysfs_root=str(tmp_path)) as meter:
            (sample,) = meter.read()
    assert sample.watts == pytest.approx(3.25)
    assert sample.volts == pytest.approx(5.1)
    assert sample.amps == pytest.approx(3.25 / 5.1, abs=1e-3)
    assert "hwmon0" in meter.description


def test_current_times_voltage_without_a_power_channel(tmp_path: Path) -> None:
    # the KM003C powerz driver: in0 (mV) and curr1 (mA), no power1
    fake = FakeHwmon(tmp_path, constant(2.0), name="powerz", channels=("in0", "curr1"))
    meter = create_meter("hwmon", hwmon_name="powerz", sysfs_root=str(tmp_path))
    with fake, meter:
        (sample,) = meter.read()
    assert sample.watts == pytest.approx(5.1 * round(2.0 / 5.1 * 1000) / 1000)


def test_path_option_selects_among_same_names(tmp_path: Path) -> None:
    FakeHwmon(tmp_path, constant(1.0), index=0).update(0.0)
    FakeHwmon(tmp_path, constant(4.0), index=1).update(0.0)
    with pytest.raises(MeterError, match="2 devices named 'ina226'") as info:
        create_meter("hwmon", hwmon_name="ina226", sysfs_root=str(tmp_path)).open()
    assert "path" in (info.value.hint or "")
    meter = create_meter("hwmon", path="sys/class/hwmon/hwmon1", sysfs_root=str(tmp_path))
    with meter:
        assert meter.read()[0].watts == pytest.approx(4.0)


def test_unknown_name_lists_the_available_ones(tmp_path: Path) -> None:
    FakeHwmon(tmp_path, constant(1.0), name="ina219").update(0.0)
    with pytest.raises(MeterError, match="no device named 'ina226'") as info:
        create_meter("hwmon", hwmon_name="ina226", sysfs_root=str(tmp_path)).open()
    assert "ina219" in (info.value.hint or "")


def test_a_sensor_without_power_is_refused(tmp_path: Path) -> None:
    FakeHwmon(tmp_path, constant(1.0), name="adc", channels=("in1",)).update(0.0)
    with pytest.raises(MeterError, match="neither power1_input"):
        create_meter("hwmon", hwmon_name="adc", sysfs_root=str(tmp_path)).open()


def test_name_or_path_is_required() -> None:
    # a configuration error, found before the driver is built (as at inventory load)
    with pytest.raises(ConfigError, match="needs one of the options hwmon_name, path"):
        create_meter("hwmon")


def test_update_interval_sets_the_period_and_marks_repeats(tmp_path: Path) -> None:
    fake = FakeHwmon(tmp_path, constant(2.0), update_interval_ms=100)
    fake.update(0.0)
    with create_meter("hwmon", hwmon_name="ina226", sysfs_root=str(tmp_path)) as meter:
        assert meter.nominal_period_s == pytest.approx(0.1)
        flags = [meter.read()[0].fresh for _ in range(3)]
    assert flags == [False, False, False]  # open() already took the first reading


def test_vanished_sensor_is_a_meter_error(tmp_path: Path) -> None:
    fake = FakeHwmon(tmp_path, constant(2.0))
    fake.update(0.0)
    with create_meter("hwmon", hwmon_name="ina226", sysfs_root=str(tmp_path)) as meter:
        fake.remove()
        with pytest.raises(MeterError, match="read failed"):
            meter.read()
