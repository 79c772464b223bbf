"""Energies stored by `tslm-fleet run` against the true power, on real SSH devices.

Three fake devices, each a Unix user behind its own sshd, are metered by load-following
emulators (``tslm-fleet meter emulate --follow-user``): pi4 through a UM25C on a pty,
pi5 through an INA226 in a fake hwmon tree, pi3 through a Pi 5 PMIC's ``vcgencmd``.
Their power is P_idle + P_busy x (the CPU use of the device user's processes), and each
emulator writes it to a trace on the machine's monotonic clock, which the agents' window
times share. The run measures the dense model and a compressed variant with the
``alternating`` task (heavy and light queries in turn) after ranging each meter's lag;
every stored window's energy and net energy, and every trial's idle baseline, must match
the trace within the family's bound (``testbed.truth.BOUNDS``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from agent.meters.emulate.follow import read_trace
from testbed import truth
from tests.fleet.harness import cli, db_rows, run_args, run_id_of, write_experiment

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

#: device -> meter kind (the UM is the um25c of the bounds table)
METERS = {"pi4": "um25c", "pi5": "hwmon", "pi3": "pi5-pmic"}


def meter_entry(kind: str, folder: Path) -> dict[str, Any]:
    """The inventory's meter entry for the emulator serving under ``folder``."""
    if kind == "um25c":
        return {"kind": kind, "port": str(folder / "rfcomm0")}
    if kind == "hwmon":
        return {"kind": kind, "hwmon_name": "ina226", "sysfs_root": str(folder)}
    return {"kind": kind, "vcgencmd": str(folder / "vcgencmd")}


@pytest.mark.timeout(900)
def test_stored_energies_match_the_true_power(
    fleet_factory, shared_dir: Path, tiny_model: Path, tmp_path: Path
) -> None:
    names = list(METERS)
    folders = {name: shared_dir / f"meter-{name}" for name in names}
    fleet = fleet_factory(
        len(names),
        names=names,
        meters=[meter_entry(METERS[n], folders[n]) for n in names],
    )
    traces = {name: shared_dir / f"{name}.trace" for name in names}
    variants = ("dense", "tt:rank=2")
    exp = write_experiment(
        tmp_path / "exp.yaml",
        tiny_model,
        variants=variants,
        tasks=(("alternating", {"queries": 16, "heavy_s": 0.5, "light_s": 0.5}),),
        repetitions=1,
        warmup=1,
        idle_seconds=2.0,
        threads=2,
        window={"min_fresh_samples": 10, "min_seconds": 1.0, "lag_steps": 6},
    )
    db = f"sqlite:///{tmp_path / 'results.db'}"
    with contextlib.ExitStack() as stack:
        for device in fleet.devices:
            kind = METERS[device.name]
            args = ["--follow-user", device.user, "--trace", str(traces[device.name])]
            args += ["--world-accessible"]
            args += ["--link", str(folders[device.name] / "rfcomm0")] if kind == "um25c" else []
            args += ["--root", str(folders[device.name])] if kind != "um25c" else []
            folders[device.name].mkdir(mode=0o755, exist_ok=True)
            stack.enter_context(truth.serve_meter(kind, *args))
        run = cli(*run_args(fleet, ",".join(names), exp, db, tmp_path / "cache"), cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    run_id = run_id_of(run.stdout)

    rows = db_rows(
        db,
        "SELECT d.name AS device, t.id AS trial, t.variant, t.idle_power_w, w.kind, "
        "w.t_start, w.t_end, w.duration_s, w.energy_j, w.net_energy_j, w.under_resolved "
        "FROM windows w JOIN trials t ON t.id = w.trial_id JOIN devices d "
        "ON d.id = t.device_id WHERE t.run_id = :r",
        r=run_id,
    )
    ranged = {
        row["trial"]: json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
        for row in db_rows(
            db,
            "SELECT e.trial_id AS trial, e.data FROM events e JOIN trials t "
            "ON t.id = e.trial_id WHERE t.run_id = :r AND e.type = 'phase'",
            r=run_id,
        )
        if "lag_s" in (json.loads(row["data"]) if isinstance(row["data"], str) else row["data"])
    }
    checked: dict[str, int] = {}
    for name in names:
        kind, bound = METERS[name], truth.BOUNDS[METERS[name]]
        trace = read_trace(traces[name])
        for variant in variants:
            mine = [r for r in rows if r["device"] == name and r["variant"] == variant]
            (idle,) = [r for r in mine if r["kind"] == "idle"]
            lag = ranged[idle["trial"]]
            assert lag["lag_problem"] is None, (name, variant, lag)
            idle_error = truth.idle_error(trace, idle, idle["idle_power_w"])
            assert abs(idle_error) <= bound.idle, (name, variant, idle, idle_error)
            windows = [r for r in mine if r["kind"] == "queries"]
            full = [e for e in truth.errors(trace, windows, idle) if e.duration_s >= bound.window_s]
            assert full, (name, variant, windows)
            for error in full:
                where = (name, variant, error)
                assert abs(error.energy) <= bound.energy, (where, error.energy, lag)
                assert error.net is not None and abs(error.net) <= bound.net, (where, error.net)
            checked[name] = checked.get(name, 0) + len(full)
    assert set(checked) == set(names)
