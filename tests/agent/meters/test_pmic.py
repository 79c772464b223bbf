"""Raspberry Pi 5 PMIC through a fake vcgencmd on PATH."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.meters import create_meter
from agent.meters.emulate import vcgencmd
from agent.meters.pmic import parse_pmic_adc
from tasks.errors import MeterError, MeterTimeout


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    vcgencmd.install(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir


def test_parser_pairs_rails_and_skips_voltage_only_ones() -> None:
    text = (
        "  VDD_CORE_A current(7)=0.56259000A\n junk line\n"
        "  VDD_CORE_V volt(15)=0.76798460V\n  EXT5V_V volt(24)=5.13564000V\n"
        "  BATT_V volt(25)=0.00000000V\n  HDMI_A current(22)=0.02381076A\n"
    )
    reading = parse_pmic_adc(text)
    assert reading.rails_with_power == ["VDD_CORE"]
    assert reading.power_w == pytest.approx(0.56259 * 0.7679846)
    assert reading.volts["EXT5V"] == pytest.approx(5.13564)


def test_board_power_is_the_sum_over_rails(fake_bin: Path) -> None:
    with create_meter("pi5-pmic") as meter:
        (sample,) = meter.read()
        vcgencmd.write_state(fake_bin, {"current_scale": 2.0})
        (doubled,) = meter.read()
    assert sample.watts == pytest.approx(vcgencmd.expected_power_w())
    assert doubled.watts == pytest.approx(vcgencmd.expected_power_w(2.0))
    assert sample.volts == pytest.approx(5.13564)
    assert "PMIC output power" in meter.description and "not the wall" in meter.description


def test_a_board_without_rails_is_refused(fake_bin: Path) -> None:
    vcgencmd.write_state(fake_bin, {"no_rails": True})
    with pytest.raises(MeterError, match="no rail") as info:
        create_meter("pi5-pmic").open()
    assert "Pi 4" in (info.value.hint or "")


def test_missing_vcgencmd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MeterError, match="vcgencmd not found"):
        create_meter("pi5-pmic").open()


def test_failing_and_hanging_vcgencmd(fake_bin: Path) -> None:
    meter = create_meter("pi5-pmic", vcgencmd=str(fake_bin / "vcgencmd"))
    meter.open()
    vcgencmd.write_state(fake_bin, {"exit_code": 1})
    with pytest.raises(MeterError, match="exited 1"):
        meter.read()
    vcgencmd.write_state(fake_bin, {"delay_s": 5})
    with pytest.raises(MeterTimeout):
        meter.read()


def test_throttling_and_temperature_output(fake_bin: Path) -> None:
    import subprocess

    exe = str(fake_bin / "vcgencmd")
    assert (
        subprocess.run([exe, "get_throttled"], capture_output=True, text=True).stdout
        == "throttled=0x0\n"
    )
    vcgencmd.write_state(fake_bin, {"throttled": "0x50005", "temp_c": 81.2})
    assert (
        subprocess.run([exe, "get_throttled"], capture_output=True, text=True).stdout
        == "throttled=0x50005\n"
    )
    assert (
        subprocess.run([exe, "measure_temp"], capture_output=True, text=True).stdout
        == "temp=81.2'C\n"
    )
