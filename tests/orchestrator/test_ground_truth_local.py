"""`tslm-fleet run --devices local` against the true power, into the database.

The run is started inside a cgroup of its own: the controller, the detached agent and
everything they start stay in it, and a load-following hwmon meter
(``tslm-fleet meter emulate --follow-cgroup``) turns the cgroup's CPU use into the
board's power, written as a true trace on the monotonic clock. Every stored window's
energy and net energy, and each trial's idle baseline, must match the trace within the
hwmon bound of ``testbed.truth.BOUNDS``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.meters.emulate.follow import read_trace
from testbed import truth
from testbed.models import save_tiny_model

CGROUP_ROOT = Path("/sys/fs/cgroup/unified")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not (CGROUP_ROOT / "cgroup.procs").exists(),
        reason="needs root and a cgroup v2 hierarchy at /sys/fs/cgroup/unified",
    ),
]


def db_rows(url: str, sql: str, **params: object) -> list[dict]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


@pytest.mark.timeout(900)
def test_local_run_energies_match_the_true_power(tmp_path: Path) -> None:
    model = tmp_path / "tiny-llama"
    save_tiny_model(model)
    group = CGROUP_ROOT / f"tslm-truth-{os.getpid()}"
    group.mkdir()
    trace_path = tmp_path / "true.trace"
    try:
        with truth.serve_meter(
            "hwmon",
            "--follow-cgroup", str(group),
            "--trace", str(trace_path),
            "--root", str(tmp_path / "meter"),
        ) as options:  # fmt: skip
            (tmp_path / "inventory.yaml").write_text(
                f"defaults: {{meter_roots: [{options['sysfs_root']}]}}\n"
                f"devices:\n  local: {{transport: local, workdir: {tmp_path / 'work'}, "
                f"meter: {{kind: hwmon, hwmon_name: ina226, sysfs_root: {options['sysfs_root']}}}}}\n"
            )
            (tmp_path / "exp.yaml").write_text(
                f"model: {model}\n"
                "variants: [dense, 'tt:rank=2']\n"
                "tasks:\n  - alternating: {queries: 8, heavy_s: 0.5, light_s: 0.5}\n"
                "repetitions: 1\nwarmup: 1\nidle_seconds: 1.5\nthreads: 2\n"
                "window: {min_fresh_samples: 3, min_seconds: 1.0, lag_steps: 6}\n"
            )
            db = f"sqlite:///{tmp_path / 'results.db'}"
            run = subprocess.run(
                [
                    sys.executable, "-m", "orchestrator", "run", "--devices", "local",
                    "--experiment", "exp.yaml", "--no-dashboard", "--db", db,
                    "--cache-dir", str(tmp_path / "cache"),
                ],
                cwd=tmp_path, capture_output=True, text=True, timeout=800, check=False,
                preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())),
            )  # fmt: skip
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
            deadline = time.monotonic() + 30  # the detached agent ends with its job
            while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            os.kill(int(pid), 9)
        time.sleep(0.2)
        group.rmdir()

    trace = read_trace(trace_path)
    bound = truth.BOUNDS["hwmon"]
    rows = db_rows(
        db,
        "SELECT t.id AS trial, t.variant, t.idle_power_w, w.kind, w.t_start, w.t_end, "
        "w.energy_j, w.net_energy_j FROM windows w JOIN trials t ON t.id = w.trial_id",
    )
    phases = db_rows(db, "SELECT trial_id AS trial, data FROM events WHERE type = 'phase'")
    lags = {}
    for row in phases:
        data = json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
        if data.get("phase") == "ranged":
            lags[row["trial"]] = data
    checked = 0
    for variant in ("dense", "tt:rank=2"):
        mine = [r for r in rows if r["variant"] == variant]
        (idle,) = [r for r in mine if r["kind"] == "idle"]
        assert lags[idle["trial"]]["lag_problem"] is None, lags[idle["trial"]]
        idle_error = truth.idle_error(trace, idle, idle["idle_power_w"])
        assert abs(idle_error) <= bound.idle, (variant, idle, idle_error)
        windows = [r for r in mine if r["kind"] == "queries"]
        for error in truth.errors(trace, windows, idle):
            if error.duration_s < bound.window_s:
                continue
            assert abs(error.energy) <= bound.energy, (variant, error, error.energy)
            assert error.net is not None and abs(error.net) <= bound.net, (variant, error)
            checked += 1
    assert checked >= 4
