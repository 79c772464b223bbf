"""Detached jobs through the real command line: session hang-up, follow/resume, stop, lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from agent.protocol import parse_event
from tests.agent.conftest import (
    ROOT,
    agent_cmd,
    assert_gapless,
    job_dict,
    parse_lines,
    run_agent,
    write_job,
)

LONG_TASK = [
    {"name": "generate", "params": {"num_queries": 40, "max_new_tokens": 4, "chat_template": False}}
]


def wait_for(predicate, timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def status(workdir: Path, job_id: str) -> dict:
    proc = run_agent(workdir, "status", job_id)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_detached_job_survives_its_session_hanging_up(workdir: Path) -> None:
    job = write_job(workdir, job_dict(workdir, "detached", idle_seconds=2.0))
    # like an SSH session: a shell in its own session starts the job, then the whole
    # session gets SIGHUP and the shell exits
    cmd = " ".join(agent_cmd(workdir, "start", str(job)))
    launcher = subprocess.run(
        ["setsid", "sh", "-c", f"{cmd}; kill -HUP 0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert launcher.returncode in (0, -signal.SIGHUP, 128 + signal.SIGHUP), launcher.stderr
    started = json.loads(launcher.stdout.splitlines()[0])
    assert started["job_id"] == "detached"
    pid = started["pid"]
    os.kill(pid, 0)  # alive after its session hung up
    assert status(workdir, "detached")["state"] == "running"
    # a session of its own, of which it is not the leader: it can never get a terminal
    assert os.getsid(pid) not in (os.getsid(0), pid)
    proc = run_agent(workdir, "follow", "detached")
    assert proc.returncode == 0, proc.stderr
    events = parse_lines(proc.stdout)
    assert_gapless(events)
    assert events[-1]["status"] == "ok" and events[0]["pid"] == pid
    final = status(workdir, "detached")
    assert (final["state"], final["done_status"], final["pid"]) == ("done", "ok", pid)
    assert final["last_seq"] == events[-1].seq
    assert (workdir / "jobs/detached/agent.log").exists()


def test_killed_follower_resumes_from_its_last_seq_exactly_once(workdir: Path) -> None:
    job = write_job(workdir, job_dict(workdir, "resume", idle_seconds=1.0, tasks=LONG_TASK))
    proc = run_agent(workdir, "start", str(job))
    assert proc.returncode == 0, proc.stderr
    received = []
    for _ in range(3):  # three readers in turn, each killed after a few lines
        start_seq = received[-1].seq + 1 if received else 1
        reader = subprocess.Popen(
            agent_cmd(workdir, "follow", "resume", "--from", str(start_seq)),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert reader.stdout is not None
        for _ in range(4):
            line = reader.stdout.readline()
            if not line:
                break
            received.append(parse_event(line))
        reader.kill()
        reader.wait()
    last = received[-1].seq
    proc = run_agent(workdir, "follow", "resume", "--from", str(last + 1))
    assert proc.returncode == 0, proc.stderr
    received += parse_lines(proc.stdout)
    assert_gapless(received)
    journal = (workdir / "jobs/resume/journal.jsonl").read_text().splitlines()
    assert [e.to_dict() for e in received] == [parse_event(x).to_dict() for x in journal]


def test_stop_and_the_device_lock_through_the_cli(workdir: Path) -> None:
    job = write_job(workdir, job_dict(workdir, "long", idle_seconds=60.0))
    assert run_agent(workdir, "start", str(job)).returncode == 0
    wait_for(lambda: '"phase":"idle"' in _journal(workdir, "long"), what="the idle phase")

    other = write_job(workdir, job_dict(workdir, "second"), name="second.json")
    busy = run_agent(workdir, "run", str(other))
    assert busy.returncode == 4
    assert "device busy: job long" in busy.stderr and "hint: " in busy.stderr
    busy = run_agent(workdir, "start", str(other))
    assert busy.returncode == 4

    proc = run_agent(workdir, "stop", "long", "--wait", "30")
    assert proc.returncode == 0, proc.stderr
    stopped = json.loads(proc.stdout)
    assert (stopped["state"], stopped["done_status"]) == ("done", "stopped")
    events = parse_lines(_journal(workdir, "long"))
    assert_gapless(events)
    assert events[-1]["reason"] == "SIGTERM" and events[-1]["duration_s"] < 50

    done = run_agent(workdir, "run", str(other))  # the lock is free again
    assert done.returncode == 0, done.stderr
    assert_gapless(parse_lines(done.stdout))


def _journal(workdir: Path, job_id: str) -> str:
    try:
        return (workdir / "jobs" / job_id / "journal.jsonl").read_text()
    except FileNotFoundError:
        return ""
