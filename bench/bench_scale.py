"""One controller, up to 64 devices: what each device costs the controller.

The devices are light fake boards (testbed/fleet.py: ``build_light_fleet``): one real
sshd each on its own loopback address and host key, sharing one Unix user, each with
its own agent work directory, running the real agent on the model-free ``idle`` task,
so that the devices do not compete with the controller for this machine's cores. One
untimed priming run over all devices pushes the bundle and artifacts; then each fleet
size runs ``tslm-fleet run`` as a subprocess (two trials per device: variants ``dense``
and ``int8`` of a tiny model, the ``idle`` task).

Measured per run: the controller's CPU seconds (user + system, ``RUSAGE_CHILDREN``), its
peak resident memory and its peak number of established SSH connections (sampled from
/proc every 0.2 s), and from the devices' journals the time from ``run`` until every
device is measuring (its first ``running`` phase). Per device and per trial, CPU and
memory are the slopes of least-squares lines against the fleet size (the intercept is
the fixed cost: start-up, database, compression lookup). A device that starts measuring
only after another one has finished all its trials fell behind and is named. The
dashboard's refresh cost is the time to render it for that many devices.

    python -m bench.bench_scale [--quick] [--sizes 1,2,4,...] [--seconds S]

Writes ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.bench_fleet import children_cpu_s, least_squares  # noqa: E402
from bench.common import load_average_note, spread, write_result  # noqa: E402
from orchestrator.dashboard import DASHBOARD_CPU_BUDGET  # noqa: E402

NAME = "scale"
RUN_TIMEOUT_S = 600.0
VARIANTS = ("dense", "int8")
SAMPLE_PERIOD_S = 0.2


def experiment_yaml(model_dir: Path, seconds: float) -> str:
    return (
        f"model: {model_dir}\n"
        f"variants: {list(VARIANTS)}\n"
        f"tasks:\n  - idle: {{seconds: {seconds}, query_seconds: 1.0}}\n"
        "repetitions: 1\nwarmup: 0\nidle_seconds: 0\n"
    )


class ControllerWatch:
    """Samples a process's resident memory and established connections to the devices."""

    def __init__(self, pid: int, ports: set[int]) -> None:
        self.pid = pid
        self.ports = ports
        self.peak_rss_bytes = 0
        self.peak_connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ControllerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD_S):
            try:
                self.peak_rss_bytes = max(self.peak_rss_bytes, _rss_bytes(self.pid))
                self.peak_connections = max(self.peak_connections, self._connections())
            except OSError:
                return  # the process has ended

    def _connections(self) -> int:
        inodes = set()
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        count = 0
        for line in Path(f"/proc/{self.pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if fields[3] == "01" and fields[9] in inodes and remote_port in self.ports:
                count += 1
        return count


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run_fleet(fleet: Any, names: list[str], work: Path) -> dict[str, Any]:
    """One ``tslm-fleet run`` over ``names``: wall, CPU, memory, connections, run id."""
    argv = [
        sys.executable,
        "-m",
        "orchestrator",
        "run",
        "--devices",
        ",".join(names),
        "-i",
        str(fleet.inventory_path),
        "--experiment",
        str(work / "exp.yaml"),
        "--no-dashboard",
        "--db",
        f"sqlite:///{work / 'results.db'}",
        "--cache-dir",
        str(work / "cache"),
    ]
    env = {**os.environ, "COLUMNS": "160", "TSLM_CACHE": str(work / "cache")}
    ports = {fleet[n].port for n in names}
    cpu0 = children_cpu_s()
    started_wall = time.time()
    started = time.perf_counter()
    with open(work / "run.log", "w+") as log:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        with ControllerWatch(proc.pid, ports) as watch:
            try:
                code = proc.wait(RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        log.seek(0)
        output = log.read()
    wall_s = time.perf_counter() - started
    cpu_s = children_cpu_s() - cpu0
    run_id = next(
        (ln.split()[1].rstrip(":") for ln in output.splitlines() if ln.startswith("run ")), None
    )
    return {
        "devices": len(names),
        "trials": len(names) * len(VARIANTS),
        "wall_s": wall_s,
        "controller_cpu_s": cpu_s,
        "controller_peak_rss_mib": watch.peak_rss_bytes / 2**20,
        "peak_ssh_connections": watch.peak_connections,
        "returncode": code,
        "run_id": run_id,
        "reconnects": output.count("reconnected after"),
        **(measuring_times(fleet, names, run_id, started_wall) if run_id else {}),
        "output_tail": None if code == 0 else output[-1500:],
    }


def _wall(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def measuring_times(fleet: Any, names: list[str], run_id: str, started: float) -> dict[str, Any]:
    """From the journals: seconds from ``run`` until each device measured; laggards."""
    first_running: dict[str, float] = {}
    last_done: dict[str, float] = {}
    for name in names:
        device = fleet[name]
        jobs = device.home / f".tslm-{name}" / "jobs"
        for journal in sorted(jobs.glob(f"{run_id}*/journal.jsonl")):
            for line in journal.read_text().splitlines():
                event = json.loads(line)
                if event.get("type") == "phase" and event.get("phase") == "running":
                    first_running[name] = min(first_running.get(name, 1e18), _wall(event["wall"]))
                elif event.get("type") == "done":
                    last_done[name] = max(last_done.get(name, 0.0), _wall(event["wall"]))
    missing = [n for n in names if n not in first_running]
    first_finished = min(last_done.values()) if last_done else None
    behind = sorted(
        n
        for n, t in first_running.items()
        if first_finished is not None and t > first_finished and len(names) > 1
    )
    return {
        "all_measuring_s": None if missing else max(first_running.values()) - started,
        "first_measuring_s": min(first_running.values()) - started if first_running else None,
        "never_measured": missing,
        "fell_behind": behind,
    }


def dashboard_refresh_ms(devices: int, renders: int = 10) -> float:
    """Median time to render the live dashboard for ``devices`` running devices (the live
    display redraws at most every ``ms / DASHBOARD_CPU_BUDGET``, never more than 4 times
    a second)."""
    from rich.console import Console

    from agent.protocol import make_event
    from orchestrator.dashboard import DashboardView
    from orchestrator.progress import RunProgress

    names = [f"dev{i + 1:02d}" for i in range(devices)]
    progress = RunProgress("bench", names)
    for name in names:
        progress.plan(name, trials_total=2, queries_total=40)
        progress.start_trial(name, "dense / idle", estimated_queries=20)
        progress.set_state(name, "running", trial="dense / idle")
        for seq in range(1, 41):
            progress.apply_event(
                name,
                make_event(
                    seq, "power", float(seq), watts=3.0 + seq / 100, samples=seq, fresh_samples=seq
                ),
            )
    console = Console(file=io.StringIO(), width=160, force_terminal=True)
    times = []
    for _ in range(renders):
        t0 = time.perf_counter()
        console.print(DashboardView(progress))
        times.append(time.perf_counter() - t0)
    return spread(times).median * 1000


def summarise(runs: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    ok = [r for r in runs if r["returncode"] == 0]
    curve = []
    for n in sizes:
        mine = [r for r in ok if r["devices"] == n]
        if not mine:
            curve.append({"devices": n, "failed": True})
            continue
        r = mine[0]
        curve.append(
            {
                "devices": n,
                "wall_s": r["wall_s"],
                "controller_cpu_s": r["controller_cpu_s"],
                "controller_peak_rss_mib": r["controller_peak_rss_mib"],
                "peak_ssh_connections": r["peak_ssh_connections"],
                "all_measuring_s": r.get("all_measuring_s"),
                "fell_behind": r.get("fell_behind", []),
                "reconnects": r.get("reconnects", 0),
                "never_measured": r.get("never_measured", []),
                "dashboard_refresh_ms": (ms := dashboard_refresh_ms(n)),
                "dashboard_redraw_interval_s": max(0.25, ms / 1000 / DASHBOARD_CPU_BUDGET),
            }
        )
    xs = [float(c["devices"]) for c in curve if "wall_s" in c]
    cpu = [c["controller_cpu_s"] for c in curve if "wall_s" in c]
    rss = [c["controller_peak_rss_mib"] for c in curve if "wall_s" in c]
    fits = {}
    if len(xs) >= 2:
        cpu0, cpu_slope = least_squares(xs, cpu)
        rss0, rss_slope = least_squares(xs, rss)
        fits = {
            "cpu_fixed_s": cpu0,
            "cpu_s_per_device": cpu_slope,
            "cpu_s_per_device_per_trial": cpu_slope / len(VARIANTS),
            "rss_fixed_mib": rss0,
            "rss_mib_per_device": rss_slope,
        }
    return {"curve": curve, "fit": fits}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from testbed.fleet import build_light_fleet
    from testbed.models import save_tiny_model

    model_dir = work / "tiny-llama"
    save_tiny_model(model_dir)
    (work / "exp.yaml").write_text(experiment_yaml(model_dir, args.seconds))
    started = time.perf_counter()
    fleet = build_light_fleet(work / "fleet", max(args.sizes))
    setup_s = time.perf_counter() - started
    names = [d.name for d in fleet.devices]
    try:
        print(f"{len(names)} light devices up in {setup_s:.1f} s; priming run ...", flush=True)
        priming = run_fleet(fleet, names, work)
        if priming["returncode"] != 0:
            raise RuntimeError(f"priming run failed:\n{priming['output_tail']}")
        runs = []
        for n in args.sizes:
            result = run_fleet(fleet, names[:n], work)
            runs.append(result)
            print(
                f"  {n:3d} device(s): wall {result['wall_s']:.1f} s, CPU "
                f"{result['controller_cpu_s']:.2f} s, RSS {result['controller_peak_rss_mib']:.0f} MiB, "
                f"{result['peak_ssh_connections']} SSH, all measuring after "
                f"{result.get('all_measuring_s') or float('nan'):.1f} s, behind: "
                f"{', '.join(result.get('fell_behind') or []) or 'none'}, exit {result['returncode']}",
                flush=True,
            )
    finally:
        fleet.close()
    return {"setup_s": setup_s, "priming_wall_s": priming["wall_s"], "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 1,2,4,8 and 4 s trials")
    parser.add_argument("--sizes", default=None, help="fleet sizes (default 1,2,4,8,16,32,64)")
    parser.add_argument("--seconds", type=float, default=None, help="idle seconds per trial")
    args = parser.parse_args(argv)
    sizes = args.sizes or ("1,2,4,8" if args.quick else "1,2,4,8,16,32,64")
    args.sizes = sorted({int(s) for s in sizes.split(",")})
    args.seconds = args.seconds or (4.0 if args.quick else 15.0)
    from testbed.fleet import fleet_unavailable_reason

    reason = fleet_unavailable_reason()
    if reason is not None:
        write_result(NAME, {"skipped": reason}, quick=args.quick)
        print(f"skipped: {reason}")
        return 0
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tslm-scale-") as tmp:
        work = Path(tmp)
        measured = measure(args, work)
    data = {
        "sizes": args.sizes,
        "variants": list(VARIANTS),
        "task": {"name": "idle", "seconds": args.seconds},
        **measured,
        **summarise(measured["runs"], args.sizes),
        "caveats": "controller, sshd and agents share one 2-core machine with other work "
        f"({load_average_note(load_start)}): CPU and wall times are noisy; memory is the "
        "controller's peak resident set",
    }
    path = write_result(NAME, data, quick=args.quick)
    fit = data.get("fit", {})
    if fit:
        print(
            f"CPU {fit['cpu_s_per_device_per_trial']:.4f} s per device per trial, "
            f"RSS {fit['rss_mib_per_device']:.2f} MiB per device -> {path}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
