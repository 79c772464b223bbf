"""``meter read`` on the device (agent.meter_cli) and on the controller (tslm-fleet meter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.meter_cli import main
from agent.meters.emulate.sysfs import FakeHwmon
from agent.meters.emulate.traces import constant
from agent.meters.emulate.um import UmEmulator

ROOT = Path(__file__).resolve().parents[2]


def test_json_lines_then_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeHwmon(tmp_path, constant(2.5), name="ina219"):
        code = main(
            [
                "read",
                "--kind",
                "hwmon",
                "--hwmon-name",
                "ina219",
                "--option",
                f"sysfs_root={tmp_path}",
                "--seconds",
                "0.4",
                "--json",
            ]
        )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    *samples, last = lines
    # 100 Hz nominal; a loaded machine may starve the sampler for part of the 0.4 s
    assert len(samples) >= 20
    for sample in samples:
        assert set(sample) == {"t", "volts", "amps", "watts", "fresh"}
        assert sample["watts"] == pytest.approx(2.5)
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    summary = last["summary"]
    assert summary["samples"] == len(samples) and summary["fresh"] == len(samples)
    assert summary["mean_w"] == pytest.approx(2.5)
    assert summary["rate_hz"] > 50  # nominal 100 Hz; the benchmark measures the rate


def test_plain_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeHwmon(tmp_path, constant(1.25)):
        code = main(
            [
                "read",
                "--kind",
                "hwmon",
                "--hwmon-name",
                "ina226",
                "--option",
                f"sysfs_root={tmp_path}",
                "--seconds",
                "0.2",
            ]
        )
    out = capsys.readouterr().out
    assert code == 0
    assert "1.2500 W  fresh" in out and "mean power: 1.2500 W" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["read", "--kind", "um26c"], "did you mean 'um25c'"),
        (["read", "--kind", "um25c", "--option", "baud=9600"], "no option 'baud'"),
        (["read", "--kind", "um25c", "--option", "oops"], "expected key=value"),
        (
            [
                "read",
                "--kind",
                "hwmon",
                "--hwmon-name",
                "nope",
                "--option",
                "sysfs_root=/nonexistent",
            ],
            "no device named 'nope'",
        ),
    ],
)
def test_errors_are_messages_not_tracebacks(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and "Traceback" not in err


def test_kinds_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kinds"]) == 0
    out = capsys.readouterr().out
    assert "um25c" in out and "pi5-pmic" in out


def test_tslm_fleet_meter_read_json_on_an_emulated_um25c() -> None:
    with UmEmulator("um25c", constant(3.5)) as emu:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "meter",
                "read",
                "--kind",
                "um25c",
                "--port",
                emu.port,
                "--seconds",
                "1.3",
                "--json",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    summary = lines[-1]["summary"]
    samples = lines[:-1]
    fresh = [s for s in samples if s["fresh"]]
    assert 2 <= summary["fresh"] == len(fresh) <= 4
    assert summary["samples"] == len(samples) > len(fresh)
    assert all(s["watts"] == 3.5 for s in samples)
    assert summary["mean_w"] == pytest.approx(3.5)


def test_tslm_fleet_meter_read_rich_summary_and_errors(tmp_path: Path) -> None:
    with FakeHwmon(tmp_path, constant(2.0)):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator",
                "meter",
                "read",
                "--kind",
                "hwmon",
                "--hwmon-name",
                "ina226",
                "--option",
                f"sysfs_root={tmp_path}",
                "--seconds",
                "0.3",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 0, out.stderr
    assert "mean power" in out.stdout and "2.0000 W" in out.stdout
    assert "achieved rate" in out.stdout and "repeated" in out.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "meter",
            "read",
            "--kind",
            "um25c",
            "--port",
            str(tmp_path / "missing"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "cannot open serial port" in bad.stderr and "Traceback" not in bad.stderr
