"""Reported energies against the true power of a load-following emulated meter.

The emulator (``tslm-fleet meter emulate --follow-...  --trace FILE``) writes the true
power on the machine's monotonic clock, which the agent's query and window times share;
these helpers integrate that trace over each reported interval and give the relative
errors that the tests hold to :data:`BOUNDS` and the ``truth`` benchmark records.

Definitions: a window's energy error is (reported - true) / true over its own
[t_start, t_end]; its net energy error is (reported net - true net) / true energy, where
the true net subtracts the true idle baseline (the time-weighted median power over the
idle window, as the agent's baseline is the median of its readings) times the duration;
the idle error is (reported baseline - true baseline) / true baseline.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.meters.emulate.follow import StepTrace


@dataclass(frozen=True)
class Bound:
    """The documented error bound of a meter family at a window length, and its basis."""

    family: str
    window_s: float
    energy: float  # relative error of a window's energy
    idle: float  # relative error of the idle baseline
    basis: str = ""  # how the bound was established (rendered beside the measurements)

    @property
    def net(self) -> float:
        """Net energy (relative to the window's energy): twice the energy bound."""
        return 2 * self.energy


#: meter kind -> its bound. Established on this project's shared 2-core machine with the
#: emulator following the agent's CPU use at 50 Hz; the measured figures beside them come
#: from ``bench/bench_truth.py`` (3 jobs per family, rendered into README.md) and
#: ``tests/agent/test_ground_truth.py``. Where the error comes from was measured by
#: comparing each reading with the true trace at its own time: the integration is not
#: biased (the trapezoid over [t0 + lag, t1 + lag] and the mean of the in-window readings
#: agree to a few tenths of a percent, both centred on zero); what remains is sampling a
#: ragged power (a busy query gets a varying share of the 2 cores, so the true power
#: jumps every 20 ms step by a fraction of a watt) and, for the PMIC, the cost of reading.
BOUNDS: dict[str, Bound] = {
    "fnb58": Bound(
        "FNIRSI",
        1.0,
        0.02,
        0.02,
        "100 readings a second (4 in each 40 ms packet) see every 20 ms step of the "
        "power; the issue's 2 % holds (agent-level test through the fake endpoints)",
    ),
    "hwmon": Bound(
        "hwmon",
        1.0,
        0.02,
        0.02,
        "polled at 100 Hz, twice the rate at which the emulated power changes, so every "
        "step is read (followed at the poll rate itself, the clocks beat and 1 s windows "
        "were off by up to 2.7 %); the issue's 2 % holds, narrowly under a load average "
        "above 6 with other fleet tests alongside",
    ),
    "pi5-pmic": Bound(
        "Pi 5 PMIC",
        1.0,
        0.10,
        0.08,
        "ten instantaneous readings a second of a power that changes every 20 ms: a 1 s "
        "window's energy rests on ten draws, so the issue's 2 % does not hold (that would "
        "take many times the readings, or a steady load). Behind 0.3 s of lag, taken out, "
        "about one 1 s query in 24 still falls outside it (the lagged view adds a "
        "sampling of its own). The idle baseline can read high: a reading may be taken while the "
        "vcgencmd call forked for it runs, which the emulated power counts",
    ),
    "um25c": Bound(
        "RDTech UM",
        5.0,
        0.05,
        0.05,
        "each reading is the mean of a half second (no power is missed) and about 0.25 s "
        "late, which ranging finds; the issue's 5 % holds",
    ),
}


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
