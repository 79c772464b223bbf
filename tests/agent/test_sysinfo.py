"""Board probes against a fake /proc and /sys tree and a fake ``vcgencmd`` on PATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import sysinfo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_pi(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    (root / "proc/cpuinfo").write_text(
        "processor\t: 0\nBogoMIPS\t: 108.00\n\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"
    )
    (root / "proc/meminfo").write_text(
        "MemTotal:        8245008 kB\nMemFree:         7000000 kB\nMemAvailable:    7500000 kB\n"
    )
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    for n, (kind, milli) in enumerate([("rp1_adc", "30000"), ("cpu-thermal", "61250")]):
        zone = root / f"sys/class/thermal/thermal_zone{n}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(milli + "\n")
    freq = root / "sys/devices/system/cpu/cpu0/cpufreq"
    freq.mkdir(parents=True)
    (freq / "scaling_cur_freq").write_text("2400000\n")
    return root


def install_vcgencmd(bindir: Path, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake vcgencmd answering ``get_throttled`` the way the firmware tool does."""
    bindir.mkdir(exist_ok=True)
    script = bindir / "vcgencmd"
    script.write_text(
        f'#!/bin/sh\n[ "$1" = get_throttled ] && echo "throttled={value}" '
        '&& exit 0\necho "error=1 error_msg=\\"Command not registered\\""\n'
        "exit 255\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_probes_read_the_board(fake_pi: Path) -> None:
    assert sysinfo.board_model(fake_pi) == "Raspberry Pi 5 Model B Rev 1.0"
    assert sysinfo.cpu_model(fake_pi) == "Raspberry Pi 5 Model B Rev 1.0"
    assert sysinfo.memory_bytes(fake_pi) == (8245008 * 1024, 7500000 * 1024)
    assert sysinfo.os_name(fake_pi) == "Debian GNU/Linux 12 (bookworm)"
    assert sysinfo.cpu_temp_c(fake_pi) == 61.25  # the cpu zone, not zone 0
    assert sysinfo.cpu_freq_mhz(fake_pi) == 2400.0


def test_probes_answer_none_on_a_bare_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no vcgencmd
    assert sysinfo.board_model(tmp_path) is None
    assert sysinfo.cpu_temp_c(tmp_path) is None
    assert sysinfo.cpu_freq_mhz(tmp_path) is None
    assert sysinfo.memory_bytes(tmp_path) == (None, None)
    state = sysinfo.thermal_state(tmp_path)
    assert state.throttled_flags is None and state.throttled is None


@pytest.mark.parametrize(
    ("value", "throttled"),
    [
        ("0x0", False),
        ("0x50000", False),  # under-voltage and throttling happened since boot, not now
        ("0x50005", True),  # under-voltage and throttled now
        ("0x8", True),  # soft temperature limit active
    ],
)
def test_throttle_flags_from_vcgencmd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, throttled: bool
) -> None:
    install_vcgencmd(tmp_path / "bin", value, monkeypatch)
    state = sysinfo.thermal_state(tmp_path)
    assert state.throttled_flags == value
    assert state.throttled is throttled


def test_info_command_prints_json(
    fake_pi: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_vcgencmd(tmp_path / "bin", "0x50005", monkeypatch)
    out = subprocess.run(
        [sys.executable, "-m", "agent", "--workdir", str(tmp_path / "wd"), "info"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    ).stdout
    info = json.loads(out)
    assert info["agent_version"] and info["python"]
    assert info["torch"] and info["transformers"]
    assert info["throttled_flags"] == "0x50005" and info["throttled"] is True
    assert info["workdir_free_bytes"] > 0
    assert info["bundle_sha256"] is None  # running from a checkout
    info = sysinfo.device_info(tmp_path, "9.9", None, root=fake_pi)
    assert info["board"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert info["ram_total_bytes"] == 8245008 * 1024
