"""The benchmark harness: ``python -m bench [NAME...] [--quick] [--list] [--report-only]``.

Runs the registered benchmarks one after another, each in its own subprocess (so one
benchmark's memory, threads and imports never colour the next one) under a time limit;
each writes ``bench/results/<result>.json``. Then it records how every run ended in
``bench/results/harness.json``, writes ``bench/results/SUMMARY.md`` and regenerates the
Results section of README.md (see :mod:`bench.report`). A benchmark that fails or runs
out of time is reported as such; the others still run.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.common import RESULTS_DIR, ROOT, machine_info, utc_now


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: its module, its result file and how to run it."""

    module: str
    result: str
    description: str
    time_limit_s: float
    #: arguments that make it a smoke run (each benchmark spells this its own way)
    quick_args: tuple[str, ...] = ("--quick",)

    @property
    def path(self) -> Path:
        return ROOT / (self.module.replace(".", "/") + ".py")

    @property
    def present(self) -> bool:
        return self.path.is_file()


#: name the user types -> benchmark, in the order ``python -m bench`` runs them. The time
#: limits add up to the budget of a full run on a 2-core machine (about 20 minutes).
BENCHMARKS: dict[str, Benchmark] = {
    "compress": Benchmark(
        "bench.bench_compress",
        "compress_speed",
        "batched TT-SVD vs the per-row tensorly loop (SmolLM2 embedding, every row)",
        time_limit_s=480,
    ),
    "frontier": Benchmark(
        "bench.bench_frontier",
        "frontier",
        "compression ratio vs reconstruction error vs perplexity (SmolLM2)",
        time_limit_s=1200,
    ),
    "inference": Benchmark(
        "bench.bench_inference",
        "inference",
        "generate latency and memory: dense vs TT, and tied heads read from the "
        "compressed table (SmolLM2)",
        time_limit_s=900,
    ),
    "fleet": Benchmark(
        "bench.bench_fleet",
        "fleet",
        "1, 2, 4 and 8 fake SSH devices: wall time and controller CPU",
        time_limit_s=480,
    ),
    "db": Benchmark(
        "bench.bench_db",
        "db",
        "SQLite/PostgreSQL ingest rates and the compare query over 1M rows",
        time_limit_s=240,
    ),
    "meters": Benchmark(
        "bench.bench_meters",
        "meters",
        "emulated power meters: sample rates and integration error",
        time_limit_s=120,
        quick_args=("--seconds", "1"),
    ),
    "truth": Benchmark(
        "bench.bench_truth",
        "truth",
        "reported window energies against the true power of load-following meters; lag",
        time_limit_s=900,
    ),
    "quality": Benchmark(
        "bench.bench_quality",
        "quality",
        "choice items/s vs lm-eval's HF wrapper; smoke-set accuracy of the variants (SmolLM2)",
        time_limit_s=900,
    ),
    "loadonce": Benchmark(
        "bench.bench_loadonce",
        "loadonce",
        "default experiment on the local device: a model load per trial vs per device",
        time_limit_s=1200,
    ),
    "scale": Benchmark(
        "bench.bench_scale",
        "scale",
        "1 to 64 light fake devices on the idle task: controller CPU, memory, SSH, start-up",
        time_limit_s=1200,
    ),
    "repeat": Benchmark(
        "bench.bench_repeat",
        "repeat",
        "the same trial ten times per load-following meter: CV, bias against ground "
        "truth, per-phase energy error",
        time_limit_s=1500,
    ),
}


def _pump(stream: IO[str], log: IO[str]) -> None:
    for line in stream:
        sys.stdout.write(line)
        sys.stdout.flush()
        log.write(line)


def run_benchmark(
    name: str, bench: Benchmark, *, quick: bool, time_limit_s: float, log_dir: Path
) -> dict[str, object]:
    """Run one benchmark in a subprocess (its own process group); echo and log its output."""
    argv = [sys.executable, "-m", bench.module, *(bench.quick_args if quick else ())]
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    started, status, code = time.perf_counter(), "ok", None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        pump = threading.Thread(target=_pump, args=(proc.stdout, log), daemon=True)
        pump.start()
        try:
            code = proc.wait(timeout=time_limit_s)
            status = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = "timeout"
            # the whole group: a benchmark may have started children of its own
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        pump.join(timeout=5)
    wall_s = time.perf_counter() - started
    return {
        "name": name,
        "result": bench.result,
        "status": status,
        "exit_code": code,
        "wall_s": round(wall_s, 1),
        "time_limit_s": time_limit_s,
        "quick": quick,
        "log": _shown(log_path),
    }


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (as the summary links it)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _select(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in BENCHMARKS]
    for name in unknown:
        close = difflib.get_close_matches(name, list(BENCHMARKS), n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        print(
            f"error: unknown benchmark {name!r}{guess}; known: {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
    if unknown:
        raise SystemExit(2)
    return names or list(BENCHMARKS)


def print_list() -> None:
    """One line per registered benchmark: name, result file, limit, description."""
    for name, bench in BENCHMARKS.items():
        state = "" if bench.present else "  (not present)"
        print(
            f"{name:10} {bench.result + '.json':20} {bench.time_limit_s:>4.0f} s  "
            f"{bench.description}{state}"
        )


def write_harness(
    path: Path, runs: list[dict[str, object]], started_at: str, *, quick: bool
) -> None:
    """Record how each run ended, keeping the entries of benchmarks not run this time."""
    previous: dict[str, object] = {}
    if path.is_file():
        try:
            previous = {r["name"]: r for r in json.loads(path.read_text()).get("runs", [])}
        except (ValueError, AttributeError, KeyError, TypeError):
            previous = {}
    merged = {**previous, **{str(r["name"]): {**r, "finished": utc_now()} for r in runs}}
    ordered = [merged[n] for n in BENCHMARKS if n in merged]
    doc = {
        "benchmark": "harness",
        "started": started_at,
        "finished": utc_now(),
        "machine": machine_info(),
        "quick": quick,
        "runs": ordered,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, then write the summary and the README section."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="smoke-run sizes")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only regenerate SUMMARY.md and the README section",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds per benchmark (default: each benchmark's own)",
    )
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    args = parser.parse_args(argv)
    if args.list:
        print_list()
        return 0
    from bench import report

    runs: list[dict[str, object]] = []
    if not args.report_only:
        started_at = utc_now()
        for name in _select(args.names):
            bench = BENCHMARKS[name]
            if not bench.present:
                print(f"== {name}: {bench.path.relative_to(ROOT)} is not present; skipped")
                runs.append({"name": name, "result": bench.result, "status": "absent"})
                continue
            limit = args.time_limit or bench.time_limit_s
            print(f"== {name}: {bench.description} (limit {limit:.0f} s)", flush=True)
            run = run_benchmark(
                name, bench, quick=args.quick, time_limit_s=limit, log_dir=RESULTS_DIR / "logs"
            )
            runs.append(run)
            print(f"== {name}: {run['status']} in {run['wall_s']} s", flush=True)
        write_harness(RESULTS_DIR / "harness.json", runs, started_at, quick=args.quick)
    summary = report.write_summary(RESULTS_DIR)
    print(f"wrote {summary.relative_to(ROOT)}")
    if not args.no_readme:
        report.update_readme(ROOT / "README.md", RESULTS_DIR)
        print("updated the Results section of README.md")
    failed = [r["name"] for r in runs if r["status"] in ("failed", "timeout")]
    if failed:
        print(
            f"{len(failed)} benchmark(s) did not finish: {', '.join(map(str, failed))}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
