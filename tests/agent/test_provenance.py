"""Provenance: board settings, firmware and the meter's facts, from a fake /proc and /sys
and the fake ``vcgencmd`` (which prints the real ``vcgencmd version`` format)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import provenance
from agent.meters import create_meter
from agent.meters.bounds import BOUNDS
from agent.meters.emulate import vcgencmd
from agent.sampler import SamplerStats


def _fake_pi(root: Path) -> Path:
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    cpufreq = root / "sys/devices/system/cpu/cpu0/cpufreq"
    cpufreq.mkdir(parents=True)
    (cpufreq / "scaling_governor").write_text("ondemand\n")
    (cpufreq / "scaling_min_freq").write_text("1500000\n")
    (cpufreq / "scaling_max_freq").write_text("2400000\n")
    (cpufreq / "cpuinfo_max_freq").write_text("2400000\n")
    return root


def test_system_provenance_reads_governor_limits_board_and_firmware(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _fake_pi(tmp_path / "root")
    vcgencmd.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    record = provenance.system(root)
    assert record["board"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert record["cpu_governor"] == "ondemand"
    assert record["cpu_freq_min_mhz"] == 1500.0 and record["cpu_freq_max_mhz"] == 2400.0
    assert record["cpu_freq_hw_max_mhz"] == 2400.0
    assert record["firmware"] == "2024/09/23 14:02:56; version 4b019946 (release) (embedded)"
    assert record["kernel"]


def test_a_machine_without_them_records_none(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no vcgencmd
    record = provenance.system(tmp_path)
    assert record["firmware"] is None and record["board"] is None
    assert record["cpu_governor"] is None and record["cpu_freq_max_mhz"] is None


def test_meter_provenance_names_model_boundary_rate_and_bound(tmp_path: Path) -> None:
    um = create_meter("um25c", port=str(tmp_path / "tty"))
    record = provenance.meter(um, "um25c")
    assert record["meter_model"] == "RDTech UM25C"
    assert record["meter_boundary"] == "USB input"
    assert record["meter_firmware"] is None  # the UM protocol reports none
    assert record["meter_rate_hz"] == pytest.approx(1 / um.nominal_period_s, rel=1e-3)
    assert record["meter_error_bound"] == BOUNDS["um25c"].to_dict()
    rapl = provenance.meter(create_meter("rapl", sysfs_root="/"), "rapl")
    assert rapl["meter_boundary"] == "CPU package" and rapl["meter_error_bound"] is None


def test_measured_provenance_carries_lag_and_fresh_samples() -> None:
    stats = SamplerStats(
        total=120,
        fresh=60,
        gaps=0,
        read_errors=0,
        elapsed_s=30.0,
        achieved_rate_hz=4.0,
        fresh_rate_hz=2.0,
        running=False,
        in_gap=False,
    )
    record = provenance.measured(0.41234, True, None, stats)
    assert record == {
        "meter_lag_s": 0.4123,
        "meter_lag_ranged": True,
        "meter_lag_problem": None,
        "samples": 120,
        "fresh_samples": 60,
        "fresh_rate_hz": 2.0,
    }
