"""Fault matrix, process half: killed agents and controllers, Ctrl-C, a locked database,
a full disk and corrupted artifacts on the device.

As in test_faults_link.py, each test checks statuses and the journal/database ledger.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.inventory import load_inventory
from orchestrator.transport import open_transport
from testbed.fleet import VENV_PYTHON
from tests.fleet.harness import (
    assert_completed,
    check_ledger,
    cli,
    db_rows,
    device_jobs,
    fault_run,
    process_alive,
    run_args,
    run_id_of,
    run_status,
    running_job,
    spawn_cli,
    trials,
    wait_for_queries,
    write_experiment,
)

pytestmark = [pytest.mark.fleet]

#: query events are written when a repetition ends (they carry its energy window), so
#: a fault injected once the first repetition's queries are in the journal lands while
#: the other two run (several seconds on the tiny model)
LONG = ("generate", {"num_queries": 100, "max_new_tokens": 16})
REPS = 3
LONG_QUERIES = 300
SHORT = ("generate", {"num_queries": 2, "max_new_tokens": 3})


def query_seqs(db: str, trial_id: int) -> list[int]:
    return [
        r["seq"]
        for r in db_rows(db, "SELECT seq FROM queries WHERE trial_id = :t ORDER BY seq", t=trial_id)
    ]


@pytest.mark.fault(
    "agent process killed (SIGKILL) mid-trial",
    expected="trial failed, others go on; --resume re-runs it as attempt 2",
)
@pytest.mark.timeout(600)
def test_agent_killed_then_resumed_as_a_new_attempt(
    fleet_factory, tiny_model: Path, tmp_path: Path
) -> None:
    fleet = fleet_factory(1)
    device = fleet["pi4"]
    args, db = fault_run(
        fleet,
        "pi4",
        tiny_model,
        tmp_path,
        tasks=(LONG, ("perplexity", {"max_tokens": 64})),
        repetitions=REPS,
    )
    spawned = spawn_cli(*args, cwd=tmp_path)
    try:
        wait_for_queries(device, 5, spawned=spawned)
        job_id, pid = running_job(device)
        os.kill(pid, signal.SIGKILL)
        code = spawned.wait(400)
    finally:
        spawned.kill()
    out = spawned.output
    assert code == 1, out[-4000:]
    run_id = run_id_of(out)
    assert run_status(db, run_id) == "partial"
    generate, perplexity = trials(db, run_id)
    assert generate["status"] == "failed" and generate["job_id"] == job_id
    assert "died" in generate["error"] and job_id in generate["error"]
    assert perplexity["status"] == "ok"  # the other trial went on
    first = query_seqs(db, generate["id"])
    assert first, "the queries before the kill are kept"
    check_ledger(fleet, db, run_id)

    resumed = cli(*args, "--resume", run_id, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-2000:]
    assert run_status(db, run_id) == "ok"
    generate = trials(db, run_id)[0]
    assert generate["status"] == "ok" and generate["job_id"].endswith("-a2")
    seqs = query_seqs(db, generate["id"])
    assert seqs[: len(first)] == first and min(seqs[len(first) :]) > max(first)  # seq continues
    check_ledger(fleet, db, run_id)


@pytest.mark.fault(
    "controller killed (SIGKILL), then --resume",
    expected="reattach to the running job, run completes",
)
@pytest.mark.timeout(600)
def test_controller_killed_then_resume_reattaches(
    fleet_factory, tiny_model: Path, tmp_path: Path
) -> None:
    fleet = fleet_factory(1)
    device = fleet["pi4"]
    args, db = fault_run(fleet, "pi4", tiny_model, tmp_path, tasks=(LONG,), repetitions=REPS)
    spawned = spawn_cli(*args, cwd=tmp_path)
    try:
        wait_for_queries(device, 5, spawned=spawned)
        job_id, _ = running_job(device)
        spawned.proc.send_signal(signal.SIGKILL)
        spawned.wait(30)
    finally:
        spawned.kill()
    run_id = db_rows(db, "SELECT id FROM runs")[0]["id"]
    assert run_status(db, run_id) == "running"  # nobody was left to say otherwise
    resumed = cli(*args, "--resume", run_id, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-2000:]
    assert f"reattaching to job {job_id}" in resumed.stdout
    assert run_status(db, run_id) == "ok"
    (trial,) = trials(db, run_id)
    assert trial["status"] == "ok" and trial["job_id"] == job_id  # same job, no new attempt
    assert [p.name for p in device_jobs(device)] == [job_id]
    ledger = check_ledger(fleet, db, run_id)
    assert ledger.stored == LONG_QUERIES


@pytest.mark.fault(
    "Ctrl-C (SIGINT) during a run, then --resume",
    expected="agents stopped, exit 130, run interrupted; resume completes",
)
@pytest.mark.timeout(600)
def test_ctrl_c_interrupts_and_resume_completes(
    fleet_factory, tiny_model: Path, tmp_path: Path
) -> None:
    fleet = fleet_factory(1)
    device = fleet["pi4"]
    args, db = fault_run(fleet, "pi4", tiny_model, tmp_path, tasks=(LONG,), repetitions=REPS)
    spawned = spawn_cli(*args, cwd=tmp_path)
    try:
        wait_for_queries(device, 5, spawned=spawned)
        _, pid = running_job(device)
        spawned.proc.send_signal(signal.SIGINT)
        code = spawned.wait(300)
    finally:
        spawned.kill()
    out = spawned.output
    assert code == 130, out[-4000:]
    assert "Traceback" not in out
    run_id = run_id_of(out)
    assert run_status(db, run_id) == "interrupted"
    (trial,) = trials(db, run_id)
    assert trial["status"] in ("stopped", "interrupted"), trial
    deadline = time.monotonic() + 30
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not process_alive(pid), "the agent was not asked to stop"
    done = [
        json.loads(line)
        for line in (device_jobs(device)[0] / "journal.jsonl").read_text().splitlines()
        if '"done"' in line
    ]
    assert done and done[-1]["status"] == "stopped"
    check_ledger(fleet, db, run_id)

    resumed = cli(*args, "--resume", run_id, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-2000:]
    assert run_status(db, run_id) == "ok"
    assert trials(db, run_id)[0]["status"] == "ok"
    check_ledger(fleet, db, run_id)


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@pytest.mark.fault(
    "SQLite write-locked by another process for 5 s", expected="waits (busy timeout), run completes"
)
@pytest.mark.timeout(600)
def test_sqlite_locked_by_another_writer(fleet_factory, tiny_model: Path, tmp_path: Path) -> None:
    fleet = fleet_factory(1)
    device = fleet["pi4"]
    args, db = fault_run(fleet, "pi4", tiny_model, tmp_path, tasks=(LONG,), repetitions=REPS)
    path = tmp_path / "r.db"
    spawned = spawn_cli(*args, cwd=tmp_path)
    holder = None
    try:
        wait_for_queries(device, 5, spawned=spawned)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(path), "5"], stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code = spawned.wait(400)
        assert holder.wait(30) == 0
    finally:
        spawned.kill()
        if holder is not None and holder.poll() is None:
            holder.kill()
    out = spawned.output
    assert_completed(fleet, db, code, out, queries=LONG_QUERIES)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.fault(
    "device disk full (tmpfs workdir)", expected="clear error naming the device, no partial files"
)
@pytest.mark.timeout(600)
def test_device_disk_full(fleet_factory, tiny_model: Path, tmp_path: Path) -> None:
    from orchestrator.bundle import build_bundle

    fleet = fleet_factory(1)
    device = fleet["pi4"]
    workdir = device.home / ".tslm"
    workdir.mkdir()
    bundle = build_bundle(tmp_path / "cache" / "bundles")
    # room for the agent bundle, not for the model's weights
    size_kib = (bundle.path.stat().st_size + 64 * 1024) // 1024
    subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={size_kib}k,uid={device.uid},mode=0755",
            "tmpfs",
            str(workdir),
        ],
        check=True,
    )
    try:
        exp = write_experiment(tmp_path / "exp.yaml", tiny_model, tasks=(SHORT,))
        db = f"sqlite:///{tmp_path / 'r.db'}"
        run = cli(*run_args(fleet, "pi4", exp, db, tmp_path / "cache"), cwd=tmp_path)
        files = [p for p in workdir.rglob("*") if p.is_file()]
        sources = {p.name: p for p in tiny_model.iterdir()}
        for file in files:  # whatever is there is complete; no half-written leftovers
            assert ".tmp-" not in file.name, file
            if file.name in sources:
                assert file.read_bytes() == sources[file.name].read_bytes(), file
    finally:
        subprocess.run(["umount", "-l", str(workdir)], check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-4000:]
    assert "Traceback" not in out
    assert "pi4 failed:" in out and "space" in out.lower(), out[-3000:]
    run_id = run_id_of(run.stdout)
    assert run_status(db, run_id) == "failed"
    (trial,) = trials(db, run_id)
    assert trial["status"] == "failed" and "pi4" in trial["error"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.fault(
    "artifact corrupted on the device",
    expected="re-pushed at deploy (sha256); refused by the agent after deploy",
)
@pytest.mark.timeout(600)
def test_artifact_corrupted_on_the_device(fleet_factory, tiny_model: Path, tmp_path: Path) -> None:
    fleet = fleet_factory(1)
    device = fleet["pi4"]
    args, db = fault_run(
        fleet, "pi4", tiny_model, tmp_path, variants=("tt:rank=2",), tasks=(SHORT,)
    )
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    (art_dir,) = (device.home / ".tslm" / "artifacts").iterdir()
    local_dir = tmp_path / "cache" / "artifacts" / art_dir.name
    tensors = next(p for p in art_dir.iterdir() if p.name != "manifest.json")
    good = _sha256(local_dir / tensors.name)

    def corrupt() -> None:
        data = bytearray(tensors.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tensors.write_bytes(bytes(data))
        assert _sha256(tensors) != good

    corrupt()  # bit rot between two runs
    second = cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    assert _sha256(tensors) == good  # detected by sha256 at deploy and pushed again
    run_id = run_id_of(second.stdout)
    check_ledger(fleet, db, run_id)

    corrupt()  # after deploy: the agent itself must refuse it
    last_job = device_jobs(device)[-1]
    spec = json.loads((last_job / "job.json").read_text())
    spec["job_id"] = "corrupted-check"
    inv = load_inventory(fleet.inventory_path).devices["pi4"]
    bundle = next((device.home / ".tslm" / "bundles").iterdir())
    with open_transport(inv) as transport:
        local = tmp_path / "job.json"
        local.write_text(json.dumps(spec))
        transport.put(local, f"{device.home}/.tslm/incoming/corrupted-check.json")
        result = transport.run(
            [
                str(VENV_PYTHON),
                str(bundle),
                "--workdir",
                f"{device.home}/.tslm",
                "run",
                f"{device.home}/.tslm/incoming/corrupted-check.json",
            ],
            check=False,
            timeout_s=120,
        )
    assert result.exit_code != 0
    errors = [
        json.loads(line)
        for line in result.stdout.splitlines()
        if '"type": "error"' in line or '"type":"error"' in line
    ]
    assert errors, result.stdout[-2000:] + result.stderr[-2000:]
    assert "sha256" in errors[0]["message"] and tensors.name in errors[0]["message"]
    assert not [ln for ln in result.stdout.splitlines() if '"query"' in ln]
