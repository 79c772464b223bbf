"""The measurement method, run in-process on the tiny model with real meters drivers.

The 'none' meter covers the event sequence; the real hwmon driver over a fake sysfs tree
(a writer thread refreshes ``power1_input`` like an INA226 would) covers energies,
windows, the idle baseline and a meter that goes silent mid-run.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.jobs import Workdir, claim_job
from agent.journal import read_events
from agent.meters.emulate.traces import constant
from agent.meters.emulate.um import UmEmulator
from agent.protocol import Event, JobSpec
from agent.runner import run_job
from tests.agent.conftest import MODEL_REL, add_artifact, assert_gapless, job_dict, parse_lines

IDLE_W = 3.0
BUSY_W = 4.5


class Echo(io.StringIO):
    """Collects the stdout stream and calls ``on_event(line)`` for every event."""

    def __init__(self, on_line: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.on_line = on_line

    def write(self, text: str) -> int:
        if self.on_line is not None:
            self.on_line(text)
        return super().write(text)


def run_in_process(
    workdir: Path, spec_obj: dict, echo: io.StringIO | None = None
) -> tuple[str, list[Event]]:
    wd = Workdir.open(workdir)
    spec = JobSpec.from_dict(spec_obj)
    paths, locks = claim_job(wd, spec)
    echo = echo if echo is not None else io.StringIO()
    status = run_job(spec, wd, paths, locks, echo)
    journal = list(read_events(paths.journal))
    assert [e.to_dict() for e in parse_lines(echo.getvalue())] == [e.to_dict() for e in journal]
    return status, journal


def of(events: list[Event], type_: str, **match: object) -> list[Event]:
    return [e for e in events if e.type == type_ and all(e.get(k) == v for k, v in match.items())]


def test_a_job_without_meter_runs_the_whole_method(workdir: Path) -> None:
    status, events = run_in_process(workdir, job_dict(workdir, seq_start=7))
    assert status == "ok"
    assert_gapless(events, first=7)
    hello = events[0]
    assert hello["protocol"] == 1 and hello["threads"] == 1 and hello["meter_kind"] == "none"
    assert of(events, "warning", code="no_meter")
    phases = [e["phase"] for e in of(events, "phase")]
    assert phases == ["verifying", "loading", "preparing", "warmup", "idle", "running", "running"]
    assert [w["kind"] for w in of(events, "window")] == ["load", "idle", "queries", "queries"]
    queries = of(events, "query")
    assert [(q["rep"], q["index"]) for q in queries] == [(r, i) for r in (0, 1) for i in range(6)]
    for q in queries:
        assert q["energy_j"] is None and q["under_resolved"] is False
        assert q["output_tokens"] == 3 and q["t_end"] > q["t_start"]
    assert {s["rep"] for s in of(events, "score")} == {0, 1}
    done = events[-1]
    assert done["status"] == "ok" and done["queries"] == 12
    # the job's own peak resident set (reset at its start) holds at least the loaded model
    assert done["peak_rss_scope"] == "job" and done["peak_rss_bytes"] > 20 * 2**20
    decode = sorted((q["latency_s"] - q["ttft_s"]) / (q["output_tokens"] - 1) for q in queries)
    assert done["decode_queries"] == 12
    assert done["decode_s_per_token"] == (decode[5] + decode[6]) / 2
    assert not (workdir / "jobs/job-1/samples.csv").exists()


def test_a_corrupted_model_is_refused(workdir: Path) -> None:
    spec = job_dict(workdir)
    weights = workdir / MODEL_REL / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    status, events = run_in_process(workdir, spec)
    assert status == "failed"
    assert_gapless(events)
    (error,) = of(events, "error")
    assert error["error_type"] == "ModelError"
    assert "job-1" in error["message"] and f"model {MODEL_REL}" in error["message"]
    assert "does not match" in error["message"]
    assert events[-1]["status"] == "failed" and events[-1]["queries"] == 0
    assert not of(events, "query")


def test_a_job_with_a_compressed_embedding(workdir: Path, tiny_artifact_dir: Path) -> None:
    artifact = add_artifact(workdir, tiny_artifact_dir)
    spec = job_dict(workdir, artifact=artifact, variant="tt:rank=4", repetitions=1)
    status, events = run_in_process(workdir, spec)
    assert status == "ok", [e.to_dict() for e in of(events, "error")]
    assert len(of(events, "query")) == 6
    assert events[0]["variant"] == "tt:rank=4"


def test_a_corrupted_artifact_is_refused(workdir: Path, tiny_artifact_dir: Path) -> None:
    artifact = add_artifact(workdir, tiny_artifact_dir)
    cores = workdir / artifact["path"] / "cores.safetensors"
    data = bytearray(cores.read_bytes())
    data[len(data) // 2] ^= 0x01
    cores.write_bytes(bytes(data))
    status, events = run_in_process(workdir, job_dict(workdir, artifact=artifact))
    assert status == "failed"
    assert_gapless(events)
    (error,) = of(events, "error")
    assert error["error_type"] == "ArtifactError" and "cores.safetensors" in error["message"]
    assert not of(events, "phase", phase="loading")  # refused before loading the model

    (workdir / artifact["path"] / "manifest.json").write_text('{"format": "tampered"}\n')
    shutil.rmtree(workdir / "jobs")
    status, events = run_in_process(workdir, job_dict(workdir, artifact=artifact))
    (error,) = of(events, "error")
    assert status == "failed" and "manifest.json" in error["message"]


def test_sigterm_finishes_the_query_and_ends_stopped(workdir: Path) -> None:
    def on_line(line: str) -> None:
        if '"type":"query"' in line and '"index":1' in line:
            os.kill(os.getpid(), signal.SIGTERM)

    spec = job_dict(workdir, window={"min_fresh_samples": 1, "min_seconds": 0.001})
    status, events = run_in_process(workdir, spec, Echo(on_line))
    assert status == "stopped"
    assert_gapless(events)
    assert events[-1]["status"] == "stopped" and events[-1]["reason"] == "SIGTERM"
    assert 2 <= events[-1]["queries"] < 12
    assert not of(events, "score")  # a cut repetition gives no scores
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_max_duration_stops_the_job_with_a_warning(workdir: Path) -> None:
    spec = job_dict(workdir, idle_seconds=30.0, limits={"max_duration_s": 0.5})
    t0 = time.monotonic()
    status, events = run_in_process(workdir, spec)
    assert status == "stopped" and time.monotonic() - t0 < 20
    assert of(events, "warning", code="max_duration")
    assert events[-1]["reason"] == "max_duration"


class FakeIna226:
    """A hwmon sysfs tree whose power1_input a thread refreshes every ``period_s``."""

    def __init__(self, root: Path, period_s: float = 0.01) -> None:
        self.dir = root / "sys/class/hwmon/hwmon3"
        self.dir.mkdir(parents=True)
        (self.dir / "name").write_text("ina226\n")
        (self.dir / "in1_input").write_text("5100\n")
        (self.dir / "update_interval").write_text(f"{int(period_s * 1000)}\n")
        self.period_s = period_s
        self.watts = IDLE_W
        self.silent = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._write(0)
        self._thread.start()

    def _write(self, n: int) -> None:
        microwatts = int(self.watts * 1e6) + n % 2  # alternate by 1 uW: every refresh is fresh
        tmp = self.dir / ".p"
        tmp.write_text(f"{microwatts}\n")
        tmp.replace(self.dir / "power1_input")

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.period_s):
            n += 1
            if self.silent.is_set():
                (self.dir / "power1_input").unlink(missing_ok=True)
            else:
                self._write(n)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def test_a_meter_falling_silent_before_its_driver_times_out_is_reported(
    workdir: Path,
) -> None:
    """The UM25C stops answering when the queries start; its 4 s read timeout may outlast
    them, so the window edges must notice: one meter_stale warning, flagged windows."""
    with UmEmulator("um25c", constant(BUSY_W)) as emu:

        def on_line(line: str) -> None:
            if '"phase":"running"' in line:
                emu.set_fault("silent")

        spec = job_dict(
            workdir,
            idle_seconds=1.2,
            tasks=[
                {
                    "name": "generate",
                    "params": {"num_queries": 150, "max_new_tokens": 8, "chat_template": False},
                }
            ],
            repetitions=1,
            window={"min_fresh_samples": 2, "min_seconds": 0.0},
            meter={"kind": "um25c", "port": emu.port, "timeout_s": 4.0},
        )
        status, events = run_in_process(workdir, spec, Echo(on_line))
    assert status == "ok", [e.to_dict() for e in of(events, "error")]
    assert_gapless(events)
    stale = of(events, "warning", code="meter_stale")
    assert len(stale) == 1, [w.to_dict() for w in of(events, "warning")]
    assert "UM25C" in stale[0]["message"] and "no reading" in stale[0]["message"]
    windows = of(events, "window", kind="queries")
    assert sum(w["queries"] for w in windows) == 150
    last = windows[-1]
    assert last["under_resolved"] or last["energy_j"] is None
    for w in windows:
        if w["energy_j"] is not None:
            assert abs(w["mean_power_w"] - BUSY_W) < 0.05


def test_hwmon_meter_going_silent_mid_run(workdir: Path, tmp_path: Path) -> None:
    meter = FakeIna226(tmp_path / "sysfs")
    state = {"queries": 0}

    def on_line(line: str) -> None:
        if '"phase":"running"' in line:
            meter.watts = BUSY_W
        if '"type":"query"' in line:
            state["queries"] += 1
            if state["queries"] == 3:
                meter.silent.set()
                threading.Timer(0.6, meter.silent.clear).start()

    spec = job_dict(
        workdir,
        idle_seconds=0.5,
        tasks=[
            {
                "name": "generate",
                "params": {"num_queries": 40, "max_new_tokens": 12, "chat_template": False},
            }
        ],
        window={"min_fresh_samples": 5, "min_seconds": 0.0},
        meter={"kind": "hwmon", "hwmon_name": "ina226", "sysfs_root": str(tmp_path / "sysfs")},
        meter_roots=[str(tmp_path)],  # the fake sysfs tree, allowed as the inventory would
    )
    try:
        status, events = run_in_process(workdir, spec, Echo(on_line))
    finally:
        meter.close()
    assert status == "ok", [e.to_dict() for e in of(events, "error")]
    assert_gapless(events)
    assert events[-1]["queries"] == 80
    assert of(events, "warning", code="meter_warning")
    assert any("gap" in w["message"] for w in of(events, "warning"))

    (idle,) = of(events, "window", kind="idle")
    assert abs(idle["median_power_w"] - IDLE_W) < 0.01 and idle["fresh_samples"] >= 20
    windows = of(events, "window", kind="queries")
    assert any(w["gap"] for w in windows)
    assert sum(w["queries"] for w in windows) == 80
    for i, w in enumerate(windows):
        assert w["energy_j"] is not None
        assert abs(w["energy_j_per_query"] * w["queries"] - w["energy_j"]) < 1e-9
        expected_net = w["energy_j"] - idle["median_power_w"] * w["duration_s"]
        assert abs(w["net_energy_j"] - expected_net) < 1e-6
        # the fake meter switches to busy power only when the `running` phase line has
        # been echoed, so the first window may still hold a few idle-power samples
        if i > 0 and not w["gap"] and not w["last_of_rep"]:
            assert w["fresh_samples"] >= 5 and not w["under_resolved"]
            assert abs(w["mean_power_w"] - BUSY_W) < 0.2
    # A query that lies wholly inside the silence, with no reading after it when its
    # window was written (under load the silence outlasts the catch-up wait), has no
    # energy: it is flagged, never given a number.
    queries = of(events, "query")
    missing = [q for q in queries if q["energy_j"] is None]
    for q in queries:
        assert (q["net_energy_j"] is None) == (q["energy_j"] is None)
    for q in missing:
        assert q["under_resolved"] and q["fresh_samples"] == 0, q.to_dict()
    assert len(missing) < len(queries) // 2
    assert of(events, "power") or events[-1]["duration_s"] < 1.0
    lines = (workdir / "jobs/job-1/samples.csv").read_text().splitlines()
    assert lines[0] == "t,watts,volts,amps,fresh" and len(lines) > 50
