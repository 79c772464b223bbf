"""Fleet scaling: the same per-device work on 1, 2, 4 and 8 fake devices.

Each fake device is a real OpenSSH server on a loopback address with its own Unix user
(the machinery of testbed/fleet.py; needs root and sshd, otherwise the result
says why it was skipped). Every device gets the same work: a tiny seeded LLaMA model,
one TT variant, ``generate`` with a few queries and a short idle baseline. One untimed
priming run over all devices compresses the variant and pushes bundle, model and
artifact everywhere, so the timed runs measure steady-state runs. Each fleet size then
runs ``tslm-fleet run`` as a subprocess, sizes in ascending then descending order on
alternate repetitions. Measured per run: wall time, and the controller's CPU time
(user + system of the subprocess, from ``getrusage(RUSAGE_CHILDREN)``; the agents run
as other users under sshd, so their CPU time is not in it). From the database: each
trial's duration on the agent and the query latencies.

All devices share this machine's cores, so agent work competes for them and the wall
time cannot stay flat as on real boards; the figure that carries over to a real fleet is
the controller's CPU time per device (the slope of a least-squares line through CPU time
against fleet size).

    python -m bench.bench_fleet [--quick] [--sizes 1,2,4,8] [--repetitions 2]

Writes ``bench/results/fleet.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.common import sig, spread, write_result  # noqa: E402

NAME = "fleet"
RUN_TIMEOUT_S = 400.0


def experiment_yaml(model_dir: Path, queries: int, new_tokens: int) -> str:
    """The per-device work: one TT variant, a short generate task, a short idle baseline."""
    return (
        f"model: {model_dir}\n"
        "variants: ['tt:rank=2']\n"
        f"tasks:\n  - generate: {{num_queries: {queries}, max_new_tokens: {new_tokens}}}\n"
        "repetitions: 1\nwarmup: 1\nidle_seconds: 0.2\n"
    )


def children_cpu_s() -> float:
    """User + system CPU seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_fleet(names: list[str], work: Path, inventory: Path) -> dict[str, Any]:
    """One ``tslm-fleet run`` over ``names``: wall time, controller CPU, run id and status."""
    argv = [
        sys.executable,
        "-m",
        "orchestrator",
        "run",
        "--devices",
        ",".join(names),
        "-i",
        str(inventory),
        "--experiment",
        str(work / "exp.yaml"),
        "--no-dashboard",
        "--db",
        f"sqlite:///{work / 'results.db'}",
        "--cache-dir",
        str(work / "cache"),
    ]
    env = {**os.environ, "COLUMNS": "160", "TSLM_CACHE": str(work / "cache")}
    cpu0 = children_cpu_s()
    started = time.perf_counter()
    done = subprocess.run(
        argv, cwd=work, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    wall_s = time.perf_counter() - started
    cpu_s = children_cpu_s() - cpu0
    run_id = None
    for line in done.stdout.splitlines():
        if line.startswith("run ") and ":" in line:
            run_id = line.split()[1].rstrip(":")
    return {
        "devices": len(names),
        "wall_s": wall_s,
        "controller_cpu_s": cpu_s,
        "returncode": done.returncode,
        "run_id": run_id,
        "output_tail": None if done.returncode == 0 else (done.stdout + done.stderr)[-1500:],
    }


def agent_figures(db: Path, run_id: str) -> dict[str, Any]:
    """Per-trial durations and query latencies the agents reported for one run."""
    with sqlite3.connect(db) as conn:
        durations = [
            r[0]
            for r in conn.execute(
                "SELECT duration_s FROM trials WHERE run_id = ? AND duration_s IS NOT NULL",
                (run_id,),
            )
        ]
        latencies = [
            r[0]
            for r in conn.execute(
                "SELECT q.latency_s FROM queries q JOIN trials t ON q.trial_id = t.id "
                "WHERE t.run_id = ?",
                (run_id,),
            )
        ]
    return {
        "trial_duration_s": spread(durations).to_dict() if durations else None,
        "query_latency_s": spread(latencies).to_dict() if latencies else None,
    }


def least_squares(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Intercept and slope of the least-squares line through ``(xs, ys)``."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return mean_y, 0.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
    return mean_y - slope * mean_x, slope


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Stand up the devices, prime them, run every size; the fleet is always torn down."""
    from testbed.fleet import build_fleet
    from testbed.models import save_tiny_model

    model_dir = work / "tiny-llama"
    save_tiny_model(model_dir)
    (work / "exp.yaml").write_text(experiment_yaml(model_dir, args.queries, args.new_tokens))
    names = [f"dev{i + 1}" for i in range(max(args.sizes))]
    started = time.perf_counter()
    fleet = build_fleet(work / "fleet", names)
    setup_s = time.perf_counter() - started
    try:
        assert fleet.inventory_path is not None
        print(f"{len(names)} fake devices up in {setup_s:.1f} s; priming run (deploy) ...")
        priming = run_fleet(names, work, fleet.inventory_path)
        if priming["returncode"] != 0:
            raise RuntimeError(f"priming run failed:\n{priming['output_tail']}")
        print(f"  priming run over {len(names)} devices: {priming['wall_s']:.1f} s")
        runs = []
        for rep in range(args.repetitions):
            order = args.sizes if rep % 2 == 0 else list(reversed(args.sizes))
            for n in order:
                result = run_fleet(names[:n], work, fleet.inventory_path)
                if result["returncode"] == 0 and result["run_id"]:
                    result.update(agent_figures(work / "results.db", result["run_id"]))
                runs.append({"repetition": rep, **result})
                print(
                    f"  {n} device(s): wall {result['wall_s']:.1f} s, controller CPU "
                    f"{result['controller_cpu_s']:.2f} s, exit {result['returncode']}"
                )
    finally:
        fleet.close()
    return {"setup_s": setup_s, "priming_wall_s": priming["wall_s"], "runs": runs}


def summarise(runs: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """Per size: wall and CPU spread, wall ratio vs 1 device, CPU per device; the CPU fit."""
    ok = [r for r in runs if r["returncode"] == 0]
    by_size: dict[str, Any] = {}
    for n in sizes:
        mine = [r for r in ok if r["devices"] == n]
        if not mine:
            by_size[str(n)] = {"failed_runs": sum(r["devices"] == n for r in runs)}
            continue
        latencies = [r["query_latency_s"]["median"] for r in mine if r.get("query_latency_s")]
        durations = [r["trial_duration_s"]["median"] for r in mine if r.get("trial_duration_s")]
        by_size[str(n)] = {
            "runs": len(mine),
            "wall_s": spread([r["wall_s"] for r in mine]).to_dict(),
            "controller_cpu_s": spread([r["controller_cpu_s"] for r in mine]).to_dict(),
            "controller_cpu_s_per_device": spread(
                [r["controller_cpu_s"] / n for r in mine]
            ).to_dict(),
            "query_latency_s_median": spread(latencies).median if latencies else None,
            "trial_duration_s_median": spread(durations).median if durations else None,
            "failed_runs": sum(r["devices"] == n for r in runs) - len(mine),
        }
    base = by_size.get("1", {}).get("wall_s", {}).get("median")
    for entry in by_size.values():
        if base and "wall_s" in entry:
            entry["wall_ratio_vs_1"] = entry["wall_s"]["median"] / base
    fit = None
    if len({r["devices"] for r in ok}) >= 2:
        intercept, slope = least_squares(
            [float(r["devices"]) for r in ok], [r["controller_cpu_s"] for r in ok]
        )
        fit = {"fixed_cpu_s": intercept, "cpu_s_per_device": slope}
    return {"by_size": by_size, "controller_cpu_fit": fit}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run (or skip with the reason) and write the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,8", help="fleet sizes, comma-separated")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="smoke run: sizes 1,2, once")
    args = parser.parse_args(argv)
    args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if args.quick:
        args.sizes, args.repetitions = [1, 2], 1
    setup = {
        "sizes": args.sizes,
        "repetitions": args.repetitions,
        "work_per_device": {
            "model": "tiny LLaMA (hidden 32, 2 layers, seeded)",
            "variant": "tt:rank=2",
            "task": "generate",
            "queries": args.queries,
            "max_new_tokens": args.new_tokens,
            "warmup": 1,
            "idle_seconds": 0.2,
        },
        "note": (
            "Every fake device runs on this machine: agents compete for the same "
            "cores, so wall time grows with fleet size here; the controller's CPU "
            "time per device is the figure that carries over to real boards"
        ),
    }
    from testbed.fleet import fleet_unavailable_reason

    reason = fleet_unavailable_reason()
    if reason:
        path = write_result(NAME, {**setup, "skipped": reason}, quick=args.quick)
        print(f"skipped: {reason}\nwrote {path.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="tslm-bench-fleet-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # device users read the tiny model from here
        try:
            measured = measure(args, work)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"error: the fleet benchmark stopped: {exc}", file=sys.stderr)
            return 1
    doc = {**setup, **measured, **summarise(measured["runs"], args.sizes)}
    path = write_result(NAME, doc, quick=args.quick)
    print(f"\n{'devices':>7} {'wall s':>8} {'x 1 dev':>8} {'ctrl CPU s':>10} {'CPU s/dev':>9}")
    for n, entry in doc["by_size"].items():
        if "wall_s" not in entry:
            print(f"{n:>7} failed")
            continue
        print(
            f"{n:>7} {sig(entry['wall_s']['median']):>8} "
            f"{sig(entry.get('wall_ratio_vs_1')):>8} "
            f"{sig(entry['controller_cpu_s']['median']):>10} "
            f"{sig(entry['controller_cpu_s_per_device']['median']):>9}"
        )
    if doc["controller_cpu_fit"]:
        fit = doc["controller_cpu_fit"]
        print(
            f"controller CPU = {sig(fit['fixed_cpu_s'])} s + {sig(fit['cpu_s_per_device'])} s "
            "per device (least squares)"
        )
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
