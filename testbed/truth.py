"""Reported energies against the true power of a load-following emulated meter.

The emulator (``tslm-fleet meter emulate --follow-...  --trace FILE``) writes the true
power on the machine's monotonic clock, which the agent's query and window times share;
these helpers integrate that trace over each reported interval and give the relative
errors that the tests hold to :data:`BOUNDS` (kept in ``agent/meters/bounds.py``, where
every trial's provenance reads it) and the ``truth`` benchmark records.

Definitions: a window's energy error is (reported - true) / true over its own
[t_start, t_end]; its net energy error is (reported net - true net) / true energy, where
the true net subtracts the true idle baseline (the time-weighted median power over the
idle window, as the agent's baseline is the median of its readings) times the duration;
the idle error is (reported baseline - true baseline) / true baseline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.meters.bounds import BOUNDS, Bound
from agent.meters.emulate.follow import StepTrace

__all__ = [
    "BOUNDS",
    "BUSY_W",
    "IDLE_W",
    "Bound",
    "WindowError",
    "errors",
    "events_of",
    "followed_job",
    "idle_error",
    "serve_meter",
    "summary",
]


@dataclass(frozen=True)
class WindowError:
    kind: str
    t_start: float
    t_end: float
    energy_j: float
    true_j: float
    net_j: float | None
    true_net_j: float

    @property
    def duration_s(self) -> float:
        return self.t_end - self.t_start

    @property
    def energy(self) -> float:
        return (self.energy_j - self.true_j) / self.true_j

    @property
    def net(self) -> float | None:
        return None if self.net_j is None else (self.net_j - self.true_net_j) / self.true_j


def true_idle_w(trace: StepTrace, t_start: float, t_end: float) -> float:
    return trace.median_w(t_start, t_end)


def errors(
    trace: StepTrace, items: Iterable[dict[str, Any]], idle: dict[str, Any]
) -> list[WindowError]:
    """Errors of windows or queries (dicts with t_start, t_end, energy_j, net_energy_j)."""
    baseline = true_idle_w(trace, idle["t_start"], idle["t_end"])
    out = []
    for item in items:
        t0, t1 = item["t_start"], item["t_end"]
        true = trace.energy_j(t0, t1)
        out.append(
            WindowError(
                kind=item.get("kind", "query"),
                t_start=t0,
                t_end=t1,
                energy_j=item["energy_j"],
                true_j=true,
                net_j=item.get("net_energy_j"),
                true_net_j=true - baseline * (t1 - t0),
            )
        )
    return out


def idle_error(trace: StepTrace, idle: dict[str, Any], reported_w: float) -> float:
    true = true_idle_w(trace, idle["t_start"], idle["t_end"])
    return (reported_w - true) / true


def summary(values: list[float]) -> dict[str, Any]:
    """Median, 90th percentile and worst of the absolute values, with the count."""
    mags = sorted(abs(v) for v in values)
    if not mags:
        return {"n": 0, "median": None, "p90": None, "worst": None}
    return {
        "n": len(mags),
        "median": mags[len(mags) // 2],
        "p90": mags[min(len(mags) - 1, int(0.9 * len(mags)))],
        "worst": mags[-1],
    }


@contextlib.contextmanager
def serve_meter(kind: str, *args: str) -> Iterator[dict[str, str]]:
    """``tslm-fleet meter emulate --kind KIND ARGS`` in a process of its own; yields the
    driver options it prints. SIGTERM at the end completes its trace file."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "meter", "emulate", "--kind", kind, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"meter emulate --kind {kind} failed: {proc.communicate()[1]}")
        yield json.loads(line)["options"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: the emulated board of the benchmarks' followed jobs: idle watts, watts per busy core
IDLE_W, BUSY_W = 2.0, 1.5


def followed_job(
    workdir: Path,
    job_id: str,
    kind: str,
    spec: Callable[[dict[str, str]], dict[str, Any]],
    *emulate_args: str,
    timeout_s: float = 900,
) -> tuple[list[Any], StepTrace]:
    """One ``agent run`` job behind a ``kind`` meter that follows this process.

    ``spec(options)`` builds the job spec from the driver options the emulator prints;
    the emulated power is ``IDLE_W`` + ``BUSY_W`` per busy core, and ``emulate_args`` go
    to ``meter emulate`` as well (``--lag``, ...).
    Returns the job's events and the emulator's true trace.
    """
    from agent.meters.emulate.follow import read_trace
    from agent.protocol import parse_event

    trace_path = workdir.parent / f"{job_id}.trace"
    with serve_meter(
        kind,
        "--follow-pid", str(os.getpid()),
        "--idle-w", str(IDLE_W), "--busy-w", str(BUSY_W),
        "--trace", str(trace_path), "--root", str(workdir.parent / f"meter-{job_id}"),
        *emulate_args,
    ) as options:  # fmt: skip
        job = workdir.parent / f"{job_id}.json"
        job.write_text(json.dumps(spec(options)))
        done = subprocess.run(
            [sys.executable, "-m", "agent", "--workdir", str(workdir), "run", str(job)],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    events = [parse_event(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        raise RuntimeError(f"job {job_id} ({kind}) failed: {done.stderr[-2000:]}")
    return events, read_trace(trace_path)


def events_of(events: list[Any], type_: str, **match: Any) -> list[dict[str, Any]]:
    """The data of the events of ``type_`` whose fields equal ``match``."""
    return [
        e.data for e in events if e.type == type_ and all(e.get(k) == v for k, v in match.items())
    ]
