"""Results-database benchmark: ingest rates and the comparison query at scale.

Measures, on SQLite (and on PostgreSQL when a throwaway server can be started here):

* power samples/s through ``Store.ingest_power_samples`` (goal: >= 200k/s on SQLite);
* query events/s through ``Store.ingest_events`` (the controller's path during a run);
* seconds for ``compare`` (and so ``results``) over 1M query rows, which are inserted
  directly in bulk first.

Writes ``bench/results/db.json`` and prints a table. Run: ``python -m bench.bench_db``
(about a minute on two cores; ``--quick`` for a smaller smoke run).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from db.store import Store, open_store  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "db.json"
DEVICES = ("pi4", "pi5", "pi5b", "local")
VARIANTS = (
    ("dense", "dense", 1.0),
    ("tt-r8", "tt", 0.89),
    ("tt-r6", "tt", 1.48),
    ("tt-r4", "tt", 2.94),
    ("hybrid", "tt", 1.99),
)


def query_event(seq: int, index: int, rng: random.Random) -> dict[str, Any]:
    """A query event as ``Event.to_dict()`` produces it."""
    latency = 0.3 * (1 + rng.uniform(-0.1, 0.1))
    return {
        "seq": seq,
        "type": "query",
        "t": 1000.0 + seq,
        "wall": "2025-05-01T12:00:00Z",
        "task": "generate",
        "rep": 0,
        "index": index,
        "t_start": 1000.0 + seq - latency,
        "t_end": 1000.0 + seq,
        "latency_s": latency,
        "ttft_s": latency / 4,
        "prompt_tokens": 24,
        "output_tokens": 16,
        "tokens_per_s": 16 / latency,
        "output_sha256": None,
        "energy_j": 6 * latency,
        "net_energy_j": 2.8 * latency,
        "samples": 3,
        "fresh_samples": 3,
        "under_resolved": False,
        "throttled": False,
        "temp_c": 55.0,
    }


def setup_trials(store: Store, run_id: str) -> list[int]:
    store.create_run(run_id, {}, "bench", model="smollm2-135m")
    trials = []
    for device in DEVICES:
        store.upsert_device(device, f"{device}.local", None, "ssh", "pi5-pmic")
        for variant, method, ratio in VARIANTS:
            artifact = store.register_artifact(
                {
                    "model": "smollm2-135m",
                    "method": method,
                    "compression_ratio": ratio,
                    "v": variant,
                }
            )
            trials.append(store.create_trial(run_id, device, variant, "generate", artifact))
    return trials


def bench_power(store: Store, trial: int, n: int) -> float:
    rows = [(1000.0 + i * 0.001, 5.0 + (i % 13) * 0.01, 5.1, 1.0, i % 4 != 0) for i in range(n)]
    start = time.perf_counter()
    assert store.ingest_power_samples(trial, rows) == n
    return n / (time.perf_counter() - start)


def bench_events(store: Store, trial: int, n: int, batch: int = 1000) -> float:
    rng = random.Random(1)
    events = [query_event(seq, seq % 100, rng) for seq in range(1, n + 1)]
    start = time.perf_counter()
    for i in range(0, n, batch):
        store.ingest_events(trial, events[i : i + batch])
    return n / (time.perf_counter() - start)


def fill_queries(store: Store, trials: list[int], total: int) -> None:
    """``total`` query rows spread over the trials, inserted in bulk (not timed)."""
    from sqlalchemy import insert

    from db.derive import QUERY_COLUMNS
    from db.schema import Query

    rng = random.Random(2)
    per_trial = total // len(trials)
    with store.engine.begin() as conn:
        for trial in trials:
            rows = []
            for i in range(per_trial):
                e = query_event(i + 1, i % 100, rng)
                rows.append(
                    {k: e.get(k) for k in QUERY_COLUMNS} | {"trial_id": trial, "seq": i + 1}
                )
            conn.execute(insert(Query), rows)


def bench_backend(url: str, *, samples: int, events: int, queries: int) -> dict[str, Any]:
    with open_store(url) as store:
        trials = setup_trials(store, "ingest")
        power_rate = bench_power(store, trials[0], samples)
        event_rate = bench_events(store, trials[1], events)
        big = setup_trials(store, "big")
        start = time.perf_counter()
        fill_queries(store, big, queries)
        fill_s = time.perf_counter() - start
    with open_store(url, read_only=True) as ro:
        start = time.perf_counter()
        table = ro.compare("big")
        compare_s = time.perf_counter() - start
    assert sum(c.n_queries for r in table.rows for c in r.cells.values()) == queries
    return {
        "power_samples_per_s": round(power_rate),
        "query_events_per_s": round(event_rate),
        "compare_s": round(compare_s, 2),
        "query_rows": queries,
        "bulk_fill_s": round(fill_s, 1),
        "power_samples": samples,
        "query_events": events,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    sizes = (
        {"samples": 100_000, "events": 5_000, "queries": 50_000}
        if args.quick
        else {"samples": 1_000_000, "events": 50_000, "queries": 1_000_000}
    )
    report: dict[str, Any] = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "goal_power_samples_per_s_sqlite": 200_000,
        "backends": {},
    }
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tslm-bench-")))
        report["backends"]["sqlite"] = bench_backend(f"sqlite:///{tmp / 'bench.db'}", **sizes)
        if not args.no_postgres:
            from testbed import postgres

            reason = postgres.unavailable_reason()
            if reason:
                report["backends"]["postgresql"] = {"skipped": reason}
            else:
                cluster = stack.enter_context(postgres.throwaway_cluster())
                report["backends"]["postgresql"] = bench_backend(cluster.url, **sizes)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    return 0


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="results database")
    for column in ("backend", "power samples/s", "query events/s", "compare over N rows"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for name, r in report["backends"].items():
        if "skipped" in r:
            table.add_row(name, "skipped", r["skipped"], "")
            continue
        table.add_row(
            name,
            f"{r['power_samples_per_s']:,}",
            f"{r['query_events_per_s']:,}",
            f"{r['compare_s']} s over {r['query_rows']:,}",
        )
    Console().print(table)
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
