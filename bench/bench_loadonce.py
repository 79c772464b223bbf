"""One base-model load per device: the default experiment's wall time, a process per
trial (before) against one process per device (after), on the ``local`` device.

Both sides run the same experiment through ``execute_run`` with the local transport and
the ``none`` meter, after one untimed priming run that compresses the variants (into
tslm-fleet's own cache unless ``--cache-dir``) and converts the GGUF once on the device
(a warm cache, as on a lab's second run). Sides alternate within
each pair (before/after, then after/before). The outputs are compared too: every
query's output hash and every non-timing score (perplexity, token counts) must be
identical on both sides.

``--quick`` keeps the default variants and tasks but runs one repetition of short
queries with a 1 s idle baseline, so model loading weighs more than in the full run.

    python -m bench.bench_loadonce [--quick] [--pairs N]

Writes ``bench/results/loadonce.json``.
"""

from __future__ import annotations

import argparse
import io
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.common import load_average_note, spread, write_result  # noqa: E402

NAME = "loadonce"
#: the quick experiment's task parameters (same tasks as the default experiment)
QUICK_TASKS = (
    ("generate", {"num_queries": 2, "max_new_tokens": 8}),
    ("perplexity", {"max_tokens": 256}),
)


def experiment(quick: bool) -> Any:
    """The default experiment; with ``quick``, the same variants and tasks, made short."""
    from dataclasses import replace

    from orchestrator.experiment import TaskRequest, build_experiment

    exp = build_experiment()
    if not quick:
        return exp
    tasks = tuple(TaskRequest(name, dict(params)) for name, params in QUICK_TASKS)
    return replace(exp, tasks=tasks, repetitions=1, idle_seconds=1.0)


def run_once(
    work: Path, exp: Any, *, batch: bool, cache_dir: Path | None
) -> tuple[float, str, str]:
    """One run on the local device; (wall seconds, run id, database path)."""
    from rich.console import Console

    from db.store import open_store
    from orchestrator.dashboard import make_display
    from orchestrator.inventory import load_inventory
    from orchestrator.progress import RunProgress
    from orchestrator.runs import execute_run
    from orchestrator.selection import select_devices
    from orchestrator.transport import open_transport

    inv = load_inventory(work / "inventory.yaml")
    devices = select_devices(inv, "local")
    db = work / "results.db"
    store = open_store(f"sqlite:///{db}")
    console = Console(file=io.StringIO())
    t0 = time.perf_counter()
    summary = execute_run(
        devices=devices,
        experiment=exp,
        store=store,
        progress_factory=lambda run_id, names: RunProgress(run_id, names),
        display_factory=lambda progress: make_display(progress, live=False, console=console),
        open_transport=lambda device: open_transport(device),
        cache_dir=cache_dir,
        log=lambda _msg: None,
        batch_trials=batch,
    )
    wall = time.perf_counter() - t0
    if summary.status != "ok":
        raise RuntimeError(
            f"run {summary.run_id} ended {summary.status}: {console.file.getvalue()[-2000:]}"
        )
    return wall, summary.run_id, str(db)


def outputs(db: str, run_id: str) -> list[tuple[Any, ...]]:
    """What must not depend on how the model was loaded: output hashes and scores."""
    with sqlite3.connect(db) as conn:
        queries = conn.execute(
            'SELECT t.variant, q.task, q.rep, q."index", q.output_sha256, q.output_tokens '
            "FROM queries q JOIN trials t ON t.id = q.trial_id WHERE t.run_id = ? "
            "ORDER BY 1, 2, 3, 4",
            (run_id,),
        ).fetchall()
        scores = conn.execute(
            "SELECT t.variant, s.task, s.metric, s.value FROM scores s "
            "JOIN trials t ON t.id = s.trial_id WHERE t.run_id = ? "
            "AND s.metric NOT LIKE '%\\_s' ESCAPE '\\' ORDER BY 1, 2, 3, s.seq",
            (run_id,),
        ).fetchall()
    return [tuple(r) for r in queries] + [tuple(r) for r in scores]


def load_windows(db: str, run_id: str) -> list[float]:
    """Durations of the run's load windows (base loads and variant swaps)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT w.t_end - w.t_start FROM windows w JOIN trials t ON t.id = w.trial_id "
            "WHERE t.run_id = ? AND w.kind = 'load' ORDER BY w.trial_id",
            (run_id,),
        ).fetchall()
    return [float(r[0]) for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short tasks, one pair")
    parser.add_argument("--pairs", type=int, default=None, help="before/after pairs (default 1)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="controller cache of compressed variants (default: tslm-fleet's own, so that "
        "the variants are compressed once per machine)",
    )
    args = parser.parse_args(argv)
    pairs = args.pairs or 1
    exp = experiment(args.quick)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tslm-loadonce-") as tmp:
        work = Path(tmp)
        (work / "inventory.yaml").write_text(
            f"devices:\n  local: {{transport: local, workdir: {work / 'agent'}, meter: {{kind: none}}}}\n"
        )
        run_once(
            work, exp, batch=True, cache_dir=args.cache_dir
        )  # priming: compress, convert the GGUF, push
        walls: dict[str, list[float]] = {"before": [], "after": []}
        loads: dict[str, list[float]] = {"before": [], "after": []}
        identical = True
        for pair in range(pairs):
            order = ("before", "after") if pair % 2 == 0 else ("after", "before")
            seen: dict[str, list[tuple[Any, ...]]] = {}
            for side in order:
                wall, run_id, db = run_once(
                    work, exp, batch=side == "after", cache_dir=args.cache_dir
                )
                walls[side].append(wall)
                loads[side].extend(load_windows(db, run_id))
                seen[side] = outputs(db, run_id)
            identical = identical and bool(seen["before"]) and seen["before"] == seen["after"]
    before, after = spread(walls["before"]), spread(walls["after"])
    data = {
        "experiment": {
            "variants": list(exp.variants),
            "tasks": [{"name": t.name, "params": dict(t.params)} for t in exp.tasks],
            "repetitions": exp.repetitions,
            "idle_seconds": exp.idle_seconds,
            "trials": len(exp.variants) * len(exp.tasks),
        },
        "pairs": pairs,
        "wall_s": {"before": before.to_dict(), "after": after.to_dict()},
        "speedup": before.median / after.median,
        "load_window_s": {side: spread(v).to_dict() for side, v in loads.items() if v},
        "identical_outputs": identical,
        "caveats": "2-core machine shared with other work: wall times are noisy "
        f"({load_average_note(load_start)}); model loading is a larger share on a slower "
        "board",
    }
    path = write_result(NAME, data, quick=args.quick)
    print(
        f"before {before.median:.1f} s, after {after.median:.1f} s: "
        f"{data['speedup']:.2f}x, identical outputs: {identical} -> {path}"
    )
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
