"""Job directories, the device lock, path confinement, status and follow without a model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.jobs import (
    Workdir,
    claim_job,
    follow_job,
    is_alive,
    job_status,
    read_spec,
    task_params_inside,
)
from agent.journal import EventEmitter, Journal
from agent.protocol import JobSpec
from tasks.errors import AgentError, ConfigError, JobBusyError, JobSpecError
from tests.agent.conftest import ROOT, agent_cmd, run_agent

SHA = "0" * 64


def spec_dict(job_id: str = "job-1", model: str = "models/m.gguf") -> dict:
    return {
        "spec_version": 1,
        "job_id": job_id,
        "run_id": "r",
        "variant": "dense",
        "model": {"path": model, "sha256": SHA},
        "artifact": None,
        "tasks": [{"name": "generate"}],
    }


def write(tmp_path: Path, obj: dict) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture
def wd(tmp_path: Path) -> Workdir:
    return Workdir.open(tmp_path / "wd")


def test_a_symlink_leading_outside_the_workdir_is_refused(tmp_path: Path, wd: Workdir) -> None:
    (tmp_path / "elsewhere").mkdir()
    (wd.root / "models").mkdir()
    (wd.root / "models/link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(JobSpecError, match="outside the work directory"):
        read_spec(str(write(tmp_path, spec_dict(model="models/link/m.gguf"))), wd)
    assert read_spec(str(write(tmp_path, spec_dict())), wd).model.path == "models/m.gguf"


def test_task_data_files_are_named_inside_the_workdir(tmp_path: Path, wd: Workdir) -> None:
    (wd.root / "data").mkdir()
    (wd.root / "data/items.jsonl").write_text('{"text": "a b"}\n')
    params = {"data": "workdir:data/items.jsonl", "limit": 3, "text": "builtin"}
    inside = task_params_inside(params, wd, "job.json tasks[0].params")
    assert inside == {**params, "data": str(wd.root / "data/items.jsonl")}
    job = spec_dict()
    job["tasks"] = [{"name": "choice", "params": {"data": "workdir:../../etc/passwd"}}]
    with pytest.raises(JobSpecError, match=r"tasks\[0\]\.params\.data.*outside the work"):
        read_spec(str(write(tmp_path, job)), wd)
    job["tasks"] = [{"name": "choice", "params": {"data": "workdir:data/missing.jsonl"}}]
    with pytest.raises(JobSpecError, match="is not in the work directory") as err:
        read_spec(str(write(tmp_path, job)), wd)
    assert "push" in err.value.hint


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside/m.gguf", "models/../../m"])
def test_run_refuses_paths_outside_the_workdir_with_exit_2(tmp_path: Path, path: str) -> None:
    proc = run_agent(tmp_path / "wd", "run", str(write(tmp_path, spec_dict(model=path))))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "work directory" in proc.stderr
    assert not (tmp_path / "wd/jobs").exists()


def test_invalid_json_and_unknown_fields_are_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = run_agent(tmp_path / "wd", "start", str(bad))
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    proc = subprocess.run(
        agent_cmd(tmp_path / "wd", "run", "-"),
        cwd=ROOT,
        text=True,
        capture_output=True,
        input=json.dumps({**spec_dict(), "colour": 1}),
    )
    assert proc.returncode == 2 and "unknown field(s) colour" in proc.stderr


def test_the_lock_refuses_a_second_job_and_names_the_first(wd: Workdir) -> None:
    first = JobSpec.from_dict(spec_dict("first"))
    paths, locks = claim_job(wd, first)
    try:
        assert is_alive(paths)
        with pytest.raises(JobBusyError, match=r"job first \(pid \d+"):
            claim_job(wd, JobSpec.from_dict(spec_dict("second")))
        assert not (wd.root / "jobs/second").exists()
    finally:
        locks.release()
    assert not is_alive(paths)
    _, locks = claim_job(wd, JobSpec.from_dict(spec_dict("second")))
    locks.release()


def test_a_rerun_keeps_the_previous_attempt(wd: Workdir) -> None:
    spec = JobSpec.from_dict(spec_dict("again"))
    paths, locks = claim_job(wd, spec)
    paths.journal.write_text("old\n")
    locks.release()
    paths, locks = claim_job(wd, spec)
    locks.release()
    assert (wd.root / "jobs/again~1/journal.jsonl").read_text() == "old\n"
    assert not paths.journal.exists()
    assert json.loads(paths.spec.read_text())["job_id"] == "again"


def _journal_with(wd: Workdir, job_id: str, done: bool) -> None:
    paths, locks = claim_job(wd, JobSpec.from_dict(spec_dict(job_id)))
    journal = Journal(paths.journal)
    emitter = EventEmitter(journal)
    emitter.emit("phase", phase="loading")
    emitter.emit("phase", phase="idle")
    if done:
        emitter.emit("done", status="ok", queries=0, duration_s=1.0)
    journal.close()
    locks.release()


def test_status_reports_done_dead_and_unknown(wd: Workdir) -> None:
    _journal_with(wd, "finished", done=True)
    _journal_with(wd, "crashed", done=False)
    assert job_status(wd, "finished").state == "done"
    assert job_status(wd, "finished").done_status == "ok"
    assert job_status(wd, "finished").last_seq == 3
    crashed = job_status(wd, "crashed")
    assert (crashed.state, crashed.last_seq, crashed.done_status) == ("dead", 2, None)
    assert crashed.pid == os.getpid()
    assert job_status(wd, "nope").state == "unknown"


def test_follow_a_dead_job_prints_what_there_is_then_fails(wd: Workdir) -> None:
    _journal_with(wd, "crashed", done=False)
    lines: list[str] = []
    with pytest.raises(AgentError, match="without a done event"):
        follow_job(wd, "crashed", 2, lines.append)
    assert [json.loads(line)["seq"] for line in lines] == [2]
    proc = run_agent(wd.root, "follow", "crashed")
    assert proc.returncode == 3
    assert len(proc.stdout.splitlines()) == 2 and "without a done event" in proc.stderr


def test_follow_past_the_done_event_returns_at_once(wd: Workdir) -> None:
    _journal_with(wd, "finished", done=True)
    lines: list[str] = []
    follow_job(wd, "finished", 4, lines.append)
    assert lines == []
    with pytest.raises(ConfigError, match="no job 'ghost'"):
        follow_job(wd, "ghost", 1, lines.append)


def test_cli_status_and_usage_errors(tmp_path: Path) -> None:
    proc = run_agent(tmp_path / "wd", "status", "ghost")
    assert proc.returncode == 0 and json.loads(proc.stdout)["state"] == "unknown"
    proc = run_agent(tmp_path / "wd", "stop", "ghost")
    assert proc.returncode == 2 and "no job 'ghost'" in proc.stderr
    proc = run_agent(tmp_path / "wd", "frobnicate")
    assert proc.returncode == 2
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "meter", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TSLM_AGENT_WORKDIR": str(tmp_path)},
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "job_id",
    ["..", "../..", "../outside", "a/../../b", "/etc", "x/y", ".hidden", "", "a" * 129, "~1"],
)
@pytest.mark.parametrize("command", ["follow", "status", "stop"])
def test_job_ids_naming_paths_are_refused(tmp_path: Path, command: str, job_id: str) -> None:
    workdir = tmp_path / "wd"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "journal.jsonl").write_text('{"seq": 1}\n')
    proc = run_agent(workdir, command, job_id)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "must be 1-128 characters" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_a_job_directory_linked_outside_is_refused(tmp_path: Path, wd: Workdir) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (wd.root / "jobs").mkdir(exist_ok=True)
    (wd.root / "jobs" / "job-9").symlink_to(outside)
    with pytest.raises(JobSpecError, match="leads outside"):
        wd.job("job-9")
