"""Helpers of the fleet end-to-end and fault tests.

* :func:`cli` / :func:`spawn_cli`: ``tslm-fleet`` as a real subprocess (what a user runs);
* :func:`write_experiment`: a tiny experiment YAML; :func:`fault_run`: it, the run's
  arguments and its SQLite URL in one call;
* :func:`journal_queries` and :func:`check_ledger`: the query events each device wrote in
  its journals (read directly from the device user's work directory) against the query
  rows in the database: the same (trial, seq) set, each row once; :func:`assert_completed`:
  the checks of a run that survived its fault;
* :func:`wait_for_queries` / :func:`wait_for_phase`: block until a device's journals hold
  a number of query events, or a job has entered a phase (how a test lands a fault
  "mid-run");
* :func:`fault_note`: how the running fault test injected its fault, for the fault
  matrix (:mod:`testbed.faults`; the verdict itself is pytest's outcome).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testbed.faults import MATRIX
from testbed.fleet import FakeDevice, FakeFleet

CLI_TIMEOUT_S = 300.0


# --------------------------------------------------------------------------- the CLI


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "TSLM_FOLLOW_STALL_S": "8", "COLUMNS": "200"}
    env.update(extra or {})
    return env


def cli(
    *args: str, cwd: Path, timeout: float = CLI_TIMEOUT_S, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``tslm-fleet ARGS`` to the end and return its exit status and output."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
    )


@dataclass
class Spawned:
    """A ``tslm-fleet`` process running in the background, output to a file."""

    proc: subprocess.Popen
    out: Path

    def wait(self, timeout: float = CLI_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    @property
    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def spawn_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Spawned:
    out = cwd / f"cli-{time.monotonic_ns()}.log"
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=cli_env(env),
        )
    return Spawned(proc, out)


def run_args(
    fleet: FakeFleet, devices: str, experiment: Path, db: str, cache_dir: Path, *extra: str
) -> list[str]:
    assert fleet.inventory_path is not None
    return [
        "run",
        "-i",
        str(fleet.inventory_path),
        "--devices",
        devices,
        "--experiment",
        str(experiment),
        "--no-dashboard",
        "--db",
        db,
        "--cache-dir",
        str(cache_dir),
        *extra,
    ]


def fault_run(
    fleet: FakeFleet, devices: str, model: Path | str, tmp_path: Path, **experiment: Any
) -> tuple[list[str], str]:
    """A test's ``tslm-fleet run`` arguments and its SQLite URL (``tmp_path/r.db``).

    ``experiment``: the keywords of :func:`write_experiment` (tasks, repetitions, ...).
    """
    exp = write_experiment(tmp_path / "exp.yaml", model, **experiment)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    return run_args(fleet, devices, exp, db, tmp_path / "cache"), db


def run_id_of(output: str) -> str:
    """The run id from the last ``run <id>: <status>`` line of ``tslm-fleet run``."""
    for line in reversed(output.splitlines()):
        if line.startswith("run ") and ":" in line:
            return line.split()[1].rstrip(":")
    raise AssertionError(f"no run id in the output:\n{output[-2000:]}")


def write_experiment(
    path: Path,
    model: Path | str,
    *,
    variants: tuple[str, ...] = ("dense",),
    tasks: tuple[tuple[str, dict[str, Any]], ...] = (
        ("generate", {"num_queries": 2, "max_new_tokens": 3}),
    ),
    repetitions: int = 1,
    warmup: int = 0,
    idle_seconds: float = 0.5,
    **more: Any,
) -> Path:
    doc = {
        "model": str(model),
        "variants": list(variants),
        "tasks": [{name: params} for name, params in tasks],
        "repetitions": repetitions,
        "warmup": warmup,
        "idle_seconds": idle_seconds,
        **more,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --------------------------------------------------------------------------- the database


def db_rows(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of a read query, as dicts (a fresh engine each time: no cached state)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def run_status(url: str, run_id: str) -> str:
    return str(db_rows(url, "SELECT status FROM runs WHERE id = :r", r=run_id)[0]["status"])


def trials(url: str, run_id: str) -> list[dict[str, Any]]:
    return db_rows(
        url,
        "SELECT t.id, d.name AS device, t.variant, t.task, t.status, t.error, "
        "t.job_id FROM trials t JOIN devices d ON d.id = t.device_id "
        "WHERE t.run_id = :r ORDER BY t.id",
        r=run_id,
    )


# --------------------------------------------------------------------------- journals


def device_jobs(device: FakeDevice, workdir: str = ".tslm") -> list[Path]:
    """Every job directory on the device (kept earlier attempts ``<id>~N`` included)."""
    jobs = device.home / workdir / "jobs"
    return sorted(p for p in jobs.iterdir() if p.is_dir()) if jobs.is_dir() else []


def _journal_events(job_dir: Path) -> list[dict[str, Any]]:
    journal = job_dir / "journal.jsonl"
    if not journal.is_file():
        return []
    events = []
    for line in journal.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a kill: the agent's reader skips it too
    return events


def journal_queries(
    fleet: FakeFleet, url: str, run_id: str, workdir: str = ".tslm"
) -> list[tuple[int, int]]:
    """(trial id, seq) of every query event in the run's journals, across all devices."""
    by_key = {(t["device"], t["variant"], t["task"]): t["id"] for t in trials(url, run_id)}
    found: list[tuple[int, int]] = []
    for device in fleet.devices:
        for job_dir in device_jobs(device, workdir):
            try:
                spec = json.loads((job_dir / "job.json").read_text())
            except (OSError, ValueError):
                continue
            if spec.get("run_id") != run_id:
                continue
            trial = by_key[(device.name, spec["variant"], spec["tasks"][0]["name"])]
            found += [
                (trial, e["seq"]) for e in _journal_events(job_dir) if e.get("type") == "query"
            ]
    return found


@dataclass(frozen=True)
class Ledger:
    """Completed queries on the devices against the rows in the database."""

    journal: int
    stored: int
    lost: int
    duplicated: int


def check_ledger(fleet: FakeFleet, url: str, run_id: str, workdir: str = ".tslm") -> Ledger:
    """Compare journal query events with database query rows; asserts none lost or doubled."""
    on_device = journal_queries(fleet, url, run_id, workdir)
    rows = db_rows(
        url,
        "SELECT q.trial_id, q.seq FROM queries q JOIN trials t "
        "ON t.id = q.trial_id WHERE t.run_id = :r",
        r=run_id,
    )
    stored = [(r["trial_id"], r["seq"]) for r in rows]
    counts = Counter(stored)
    ledger = Ledger(
        journal=len(on_device),
        stored=len(stored),
        lost=len(set(on_device) - set(stored)),
        duplicated=sum(n - 1 for n in counts.values() if n > 1),
    )
    MATRIX.observe_ledger(ledger.stored, ledger.lost, ledger.duplicated)
    assert len(set(on_device)) == len(on_device), "a journal holds a seq twice"
    assert ledger.lost == 0, f"query records lost: {sorted(set(on_device) - set(stored))}"
    assert ledger.duplicated == 0, f"query rows duplicated: {ledger}"
    assert set(stored) == set(on_device), f"rows without a journal event: {ledger}"
    return ledger


def assert_completed(
    fleet: FakeFleet, url: str, code: int, out: str, queries: int
) -> tuple[str, Ledger]:
    """The run exited 0, it and its one trial are ok, and the database holds each of the
    ``queries`` query records the device journaled exactly once. Returns (run id, ledger)."""
    assert code == 0, out[-4000:]
    run_id = run_id_of(out)
    assert run_status(url, run_id) == "ok"
    assert [t["status"] for t in trials(url, run_id)] == ["ok"]
    ledger = check_ledger(fleet, url, run_id)
    assert ledger.stored == queries
    return run_id, ledger


def wait_for_queries(
    device: FakeDevice,
    n: int,
    timeout: float = 120.0,
    spawned: Spawned | None = None,
    workdir: str = ".tslm",
) -> None:
    """Block until the device's journals hold ``n`` query events (the fault lands mid-run).

    Query events are written when their energy window closes, so on a fast device the
    n-th one may appear only after the last query ran; use :func:`wait_for_phase` for a
    fault that must land while queries still run.
    """
    _wait_for_events(
        device, lambda e: e.get("type") == "query", n, f"{n} queries", timeout, spawned, workdir
    )


def wait_for_phase(
    device: FakeDevice,
    phase: str,
    timeout: float = 120.0,
    spawned: Spawned | None = None,
    workdir: str = ".tslm",
) -> None:
    """Block until a job on the device has entered ``phase`` (e.g. ``running``)."""
    _wait_for_events(
        device,
        lambda e: e.get("type") == "phase" and e.get("phase") == phase,
        1,
        f"the {phase!r} phase",
        timeout,
        spawned,
        workdir,
    )


def _wait_for_events(
    device: FakeDevice,
    match: Callable[[dict[str, Any]], bool],
    n: int,
    what: str,
    timeout: float,
    spawned: Spawned | None,
    workdir: str,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = sum(
            1 for job in device_jobs(device, workdir) for e in _journal_events(job) if match(e)
        )
        if count >= n:
            return
        if spawned is not None and spawned.proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{spawned.output[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"{device.name}: not {what} after {timeout:g} s")


def running_job(device: FakeDevice, workdir: str = ".tslm") -> tuple[str, int]:
    """(job id, pid) of the job whose process is alive on the device."""
    for job_dir in reversed(device_jobs(device, workdir)):
        try:
            pid = int((job_dir / "pid").read_text())
        except (OSError, ValueError):
            continue
        if process_alive(pid):
            return job_dir.name, pid
    raise AssertionError(f"{device.name}: no running job")


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: this container's init may never reap it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def fault_note(text: str) -> None:
    """How the running fault test injected its fault (shown in the fault matrix)."""
    MATRIX.note(text)
