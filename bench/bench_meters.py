"""Power-meter benchmark: sample rates, sampler CPU cost and energy-integration error.

For each emulated meter kind (the real drivers against the emulators of agent/meters/emulate):
achieved sample rate, fresh vs repeated samples, and the CPU time of the sampler thread
as a percentage of one core (goal: the native rate with under 2 %). Then the integration
error against the analytic energy of synthetic traces sampled at each meter's rate
(goal: <= 0.5 % where the rate resolves the trace; pulses shorter than the sample period
must come out under-resolved).

Writes ``bench/results/meters.json`` and prints a table. Run: ``python -m bench.bench_meters``
(about 40 s; ``--seconds`` sets the time per meter).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.energy import integrate  # noqa: E402
from agent.meters import create_meter  # noqa: E402
from agent.meters.base import Meter, Sample  # noqa: E402
from agent.meters.emulate import vcgencmd  # noqa: E402
from agent.meters.emulate.fnirsi import FakeFnirsi  # noqa: E402
from agent.meters.emulate.sysfs import FakeHwmon, FakeRapl  # noqa: E402
from agent.meters.emulate.traces import Trace, pulse, ramp, steps  # noqa: E402
from agent.meters.emulate.um import UmEmulator  # noqa: E402
from agent.sampler import Sampler  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "meters.json"
#: a trace that changes at every UM refresh, so that each refresh is a new value
VARYING = ramp(1.5, 4.5, 30.0)


def thread_cpu_s(native_id: int) -> float:
    """CPU seconds used so far by one thread of this process (Linux)."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as fh:
            return int(fh.read().split()[0]) / 1e9
    except OSError:
        with open(f"/proc/self/task/{native_id}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def emulated(kind: str, workdir: Path) -> Iterator[Callable[[], Meter]]:
    """An emulator for ``kind`` and a function building the real driver for it."""
    if kind.startswith("um"):
        with UmEmulator(kind, VARYING) as emu:
            yield lambda: create_meter(kind, port=emu.port)
    elif kind in ("fnb48", "fnb58", "c1"):
        device = FakeFnirsi(kind, VARYING)
        yield lambda: create_meter(kind, endpoints=device.endpoints)
    elif kind == "hwmon":
        with FakeHwmon(workdir, VARYING, period_s=0.002):
            yield lambda: create_meter("hwmon", hwmon_name="ina226", sysfs_root=str(workdir))
    elif kind == "rapl":
        with FakeRapl(workdir, VARYING, period_s=0.002):
            yield lambda: create_meter("rapl", sysfs_root=str(workdir))
    elif kind == "pi5-pmic":
        exe = vcgencmd.install(workdir / "bin")
        yield lambda: create_meter("pi5-pmic", vcgencmd=str(exe))
    else:
        raise ValueError(kind)


def bench_rate(kind: str, seconds: float) -> dict[str, Any]:
    """Sample one emulated meter for ``seconds`` through the sampler."""
    with tempfile.TemporaryDirectory() as tmp, emulated(kind, Path(tmp)) as build:
        meter = build()
        sampler = Sampler(meter)
        with sampler:
            tid = sampler.native_thread_id
            assert tid is not None
            cpu0, t0 = thread_cpu_s(tid), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = thread_cpu_s(tid), time.monotonic()
        stats = sampler.stats()
    return {
        "kind": kind,
        "seconds": round(stats.elapsed_s, 2),
        "nominal_rate_hz": round(1 / meter.nominal_period_s, 1) if meter.nominal_period_s else None,
        "rate_hz": round(stats.achieved_rate_hz, 1),
        "fresh_rate_hz": round(stats.fresh_rate_hz, 2),
        "samples": stats.total,
        "fresh": stats.fresh,
        "repeated": stats.total - stats.fresh,
        "gaps": stats.gaps,
        "sampler_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
    }


def sample_trace(trace: Trace, period_s: float, t_end: float, phase_s: float) -> list[Sample]:
    n = int((t_end - phase_s) / period_s) + 1
    return [
        Sample(t=phase_s + i * period_s, watts=trace.power_w(phase_s + i * period_s))
        for i in range(n)
    ]


def bench_integration() -> list[dict[str, Any]]:
    """Integration error on synthetic traces at the sample periods of the meters."""
    traces = {
        "steps": (steps([(0, 2.0), (7.3, 4.5), (21.1, 1.2), (33.7, 3.0)]), (1.0, 59.0)),
        "ramp": (ramp(1.0, 6.0, 60.0), (1.0, 59.0)),
        "steps_10s": (steps([(0, 2.0), (3.3, 4.5), (6.1, 1.2)]), (1.0, 11.0)),
    }
    periods = {"fnirsi/hwmon/rapl": 0.01, "pi5-pmic": 0.1, "um": 0.5}
    rows = []
    for period_name, period in periods.items():
        for trace_name, (trace, (t0, t1)) in traces.items():
            errors = []
            flagged = 0
            for phase in (0.0, period * 0.37, period * 0.81):
                window = integrate(sample_trace(trace, period, 62.0, phase), t0, t1)
                exact = trace.energy_j(t0, t1)
                assert window.energy_j is not None
                errors.append(abs(window.energy_j - exact) / exact)
                flagged += window.under_resolved
            # a step costs the trapezoid at most |step| x period / 2 joules: the rate
            # resolves the trace to 0.5 % when those bounds add up to less than that
            jumps = sum(
                abs(b[1] - a[1])
                for a, b in itertools.pairwise(trace.points)
                if a[0] == b[0] and t0 < a[0] < t1
            )
            bound = jumps * period / 2 / trace.energy_j(t0, t1)
            rows.append(
                {
                    "meter": period_name,
                    "period_s": period,
                    "trace": trace_name,
                    "window_s": t1 - t0,
                    "max_error_pct": round(100 * max(errors), 4),
                    "resolved": bound <= 0.005,
                    "under_resolved": flagged,
                }
            )
        # pulses shorter than the period: every one must be flagged
        total = flagged = 0
        for i in range(50):
            width = period * (0.1 + 0.017 * i)
            start = 2.0 + 0.013 * i
            samples = sample_trace(pulse(2.0, 8.0, start, width), period, 10.0, 0.0)
            window = integrate(samples, start, start + width)
            total += 1
            flagged += window.under_resolved
        rows.append(
            {
                "meter": period_name,
                "period_s": period,
                "trace": "pulse<period",
                "window_s": None,
                "max_error_pct": None,
                "resolved": False,
                "under_resolved": f"{flagged}/{total}",
            }
        )
    return rows


def bench_end_to_end(seconds: float) -> list[dict[str, Any]]:
    """Window energy through driver + sampler + integrator against the emulated trace."""
    trace = steps([(0, 2.0), (1.3, 4.0), (2.6, 2.5)])
    rows = []
    for name in ("fnb58", "hwmon"):
        with tempfile.TemporaryDirectory() as tmp:
            device = FakeFnirsi("fnb58", trace)
            fake = FakeHwmon(Path(tmp), trace, t0=device.t0, period_s=0.001)
            meter = (
                create_meter("fnb58", endpoints=device.endpoints)
                if name == "fnb58"
                else create_meter("hwmon", hwmon_name="ina226", sysfs_root=tmp)
            )
            with fake, Sampler(meter) as sampler:
                time.sleep(max(seconds, 3.5))
        t0, t1 = device.t0 + 0.5, device.t0 + 3.0
        window = sampler.window(t0, t1)
        exact = trace.energy_j(0.5, 3.0)
        rows.append(
            {
                "meter": name,
                "window_s": 2.5,
                "energy_j": window.energy_j,
                "exact_j": round(exact, 6),
                "error_pct": round(100 * abs((window.energy_j or 0) - exact) / exact, 3),
                "fresh_samples": window.fresh_samples,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="sampling time per meter")
    args = parser.parse_args(argv)
    kinds = ("um24c", "um25c", "um34c", "fnb48", "fnb58", "c1", "hwmon", "rapl", "pi5-pmic")
    rates = []
    for kind in kinds:
        seconds = max(args.seconds, 4.0) if kind.startswith("um") else args.seconds
        rates.append(bench_rate(kind, seconds))
    integration = bench_integration()
    end_to_end = bench_end_to_end(args.seconds + 0.6)
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "rates": rates,
        "integration": integration,
        "end_to_end": end_to_end,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"{'meter':10} {'nominal/s':>9} {'rate/s':>8} {'fresh/s':>8} {'fresh':>6} "
        f"{'repeat':>6} {'gaps':>4} {'cpu %':>6}"
    )
    for r in rates:
        print(
            f"{r['kind']:10} {r['nominal_rate_hz'] or '-':>9} {r['rate_hz']:>8} "
            f"{r['fresh_rate_hz']:>8} {r['fresh']:>6} {r['repeated']:>6} {r['gaps']:>4} "
            f"{r['sampler_cpu_pct']:>6}"
        )
    print(
        f"\n{'period':>7} {'trace':13} {'window s':>8} {'max err %':>10} {'resolved':>9} "
        f"{'under-resolved':>15}"
    )
    for r in integration:
        err = "-" if r["max_error_pct"] is None else r["max_error_pct"]
        print(
            f"{r['period_s']:>7} {r['trace']:13} {r['window_s'] or '-':>8} {err:>10} "
            f"{'yes' if r['resolved'] else 'no':>9} {r['under_resolved']!s:>15}"
        )
    print("\nend to end (driver + sampler + integrator, 2.5 s window with two steps):")
    for r in end_to_end:
        print(f"  {r['meter']:6} error {r['error_pct']} % over {r['fresh_samples']} fresh samples")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
