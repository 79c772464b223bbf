"""The meter allow-list end to end on the `local` device: the inventory's
``defaults: {meter_roots}`` travels in the job spec, and the agent measures from an
emulated hwmon tree only because the inventory allowed its folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.meters.emulate.sysfs import FakeHwmon
from agent.meters.emulate.traces import constant
from testbed.models import save_tiny_model

pytestmark = pytest.mark.slow


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def inventory(tmp_path: Path, roots: str) -> None:
    (tmp_path / "inventory.yaml").write_text(
        f"defaults: {{meter_roots: {roots}}}\n"
        f"devices:\n  local: {{transport: local, workdir: {tmp_path / 'work'}, "
        f"meter: {{kind: hwmon, hwmon_name: ina226, sysfs_root: {tmp_path / 'sysfs'}}}}}\n"
    )


@pytest.mark.timeout(900)
def test_an_allowed_emulated_meter_measures_and_a_disallowed_one_is_refused(
    tmp_path: Path,
) -> None:
    inventory(tmp_path, "[]")
    refused = cli("inventory", "check", cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "devices.local.meter.sysfs_root" in refused.stderr
    assert "outside the allowed locations" in refused.stderr

    model = tmp_path / "tiny"
    save_tiny_model(model)
    (tmp_path / "exp.yaml").write_text(
        f"model: {model}\nvariants: [dense]\n"
        "tasks:\n  - generate: {num_queries: 2, max_new_tokens: 3}\n"
        "repetitions: 1\nwarmup: 0\nidle_seconds: 0.5\n"
        "window: {min_fresh_samples: 2, min_seconds: 0.2}\n"
    )
    inventory(tmp_path, f"[{tmp_path / 'sysfs'}]")
    db = f"sqlite:///{tmp_path / 'results.db'}"
    with FakeHwmon(tmp_path / "sysfs", constant(4.0), name="ina226"):
        run = cli(
            "run",
            "--devices",
            "local",
            "--experiment",
            "exp.yaml",
            "--no-dashboard",
            "--db",
            db,
            "--cache-dir",
            str(tmp_path / "cache"),
            cwd=tmp_path,
        )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (job,) = (tmp_path / "work" / "jobs").iterdir()
    spec = json.loads((job / "job.json").read_text())
    assert spec["meter_roots"] == [str(tmp_path / "sysfs")]
    rows = json.loads(cli("results", "--db", db, "--format", "json", cwd=tmp_path).stdout)
    (row,) = rows
    assert "no-meter" not in row["flags"]
    assert row["idle_power_w"] == pytest.approx(4.0, rel=0.05)
