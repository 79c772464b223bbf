"""Batched TT-SVD against the published per-row tensorly loop, on the SmolLM2 embedding.

Both implementations decompose the whole 49152 x 576 table, with the same tensor shape and
rank cap, in one run and without extrapolation, through the method's ``compress`` (what
an artifact's ``compress_time_s`` records: model loading excluded): ``tt:...`` against
``tt:...:impl=tensorly``. The bare ``tensor_train`` loop (no error evaluation, no
assembly of the cores) is timed over every row too, as a stricter reference. The batched
side is the median of three runs, the loops run once. Per-row errors of both are then
measured from the stored float32 cores and compared row by row.

    python bench/bench_compress.py [--shape 8x8x9] [--ranks 6,8] [--quick]

Run it under ``flock /tmp/tslm-cpu.lock`` on a shared machine; figures stay noisy.
Writes bench/results/compress_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "compress_speed.json"


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison for every rank, print it and write the JSON result."""
    args = _parse_args(argv)
    import torch

    from tasks.compression.ttsvd import default_workers

    ref, table = _load_table(args.model)
    if args.rows:
        table = table[: args.rows].contiguous()
    shape = tuple(int(s) for s in args.shape.split("x"))
    ranks = [int(r) for r in args.ranks.split(",")]
    result = {
        "model": ref.name,
        "model_sha256": ref.sha256,
        "table": [int(s) for s in table.shape],
        "shape": list(shape),
        "tensorly_extrapolated": False,
        "by_rank": {str(r): measure(table, args.shape, r) for r in ranks},
        "threads": torch.get_num_threads(),
        "workers": default_workers(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "caveat": "one shared 2-core machine: timings are noisy; the loops run once",
    }
    # the headline figures (rank cap of the first rank) where the report reads them
    first = result["by_rank"][str(ranks[0])]
    result.update(rank_cap=[ranks[0]] * (len(shape) - 1), **first)
    for rank in ranks:
        _print_summary(result, rank)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  written to {args.out}")
    return result


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--shape", default="8x8x9")
    parser.add_argument("--ranks", default="6,8", help="rank caps, comma-separated")
    parser.add_argument("--rows", type=int, default=0, help="first N rows only (0: all)")
    parser.add_argument("--quick", action="store_true", help="the first 4096 rows, rank 6")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.ranks = args.rows or 4096, "6"
    return args


def _load_table(model: str) -> tuple[Any, Any]:
    """The resolved model and its token-embedding table (float32, contiguous)."""
    from tasks.cache import MODELS, cache_path
    from tasks.models import embedding_table, load_model, resolve_model

    ref = resolve_model(model)
    loaded, _ = load_model(ref, with_tokenizer=False, cache_dir=cache_path(MODELS))
    return ref, embedding_table(loaded).float().contiguous()


def _timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def measure(table: Any, shape_text: str, rank: int, repeats: int = 3) -> dict:
    """Both implementations through ``compress`` on every row, plus the bare loop."""
    import statistics

    import torch

    from tasks.compression import get_method, parse_variant
    from tasks.compression.base import relative_row_errors
    from tasks.compression.cores import TTCores
    from tasks.compression.tensorly_impl import decompose_row, full_rank_list

    tt = get_method("tt")
    batched = parse_variant(f"tt:rank={rank}:shape={shape_text}")
    loop = parse_variant(f"tt:rank={rank}:shape={shape_text}:impl=tensorly")
    shape = tuple(batched.get("shape"))
    tt.compress(table[:4096], batched)  # warm-up (thread pool, kernels)
    runs = [_timed(lambda: tt.compress(table, batched)) for _ in range(repeats)]
    ours, batched_s = runs[0][0], statistics.median(t for _, t in runs)
    theirs, loop_s = _timed(lambda: tt.compress(table, loop))

    data, ranks = table.double().numpy(), full_rank_list(shape, (rank,) * (len(shape) - 1))
    _, bare_s = _timed(lambda: [decompose_row(row, shape, ranks) for row in data])

    def stored_errors(result: Any) -> Any:
        cores = TTCores.from_tensors(result.tensors, shape)
        return relative_row_errors(table, cores.reconstruct(torch.float64))

    ours_err, ref_err = stored_errors(ours), stored_errors(theirs)
    diff = (ours_err - ref_err).abs()
    return {
        "rank": rank,
        "batched_s": round(batched_s, 3),
        "batched_runs_s": [round(t, 3) for _, t in runs],
        "tensorly_s": round(loop_s, 3),
        "tensorly_bare_loop_s": round(bare_s, 3),
        "speedup": round(loop_s / batched_s, 2),
        "speedup_vs_bare_loop": round(bare_s / batched_s, 2),
        "mean_rel_error_batched": float(ours_err.mean()),
        "mean_rel_error_tensorly": float(ref_err.mean()),
        "max_rel_difference_of_row_errors": float((diff / ref_err.clamp_min(1e-12)).max()),
        "max_abs_difference_of_row_errors": float(diff.max()),
    }


def _print_summary(result: dict, rank: int) -> None:
    rows, dim = result["table"]
    r = result["by_rank"][str(rank)]
    print(
        f"table {rows} x {dim}, shape {result['shape']}, rank cap {rank}, {result['threads']} threads"
    )
    print(f"  batched TT-SVD (median of {len(r['batched_runs_s'])}): {r['batched_s']:8.2f} s")
    print(f"  tensorly loop through compress:      {r['tensorly_s']:8.2f} s -> {r['speedup']:.1f}x")
    print(
        f"  bare tensor_train loop:              {r['tensorly_bare_loop_s']:8.2f} s -> "
        f"{r['speedup_vs_bare_loop']:.1f}x"
    )
    print(
        f"  mean relative error: batched {r['mean_rel_error_batched']:.6f}, tensorly "
        f"{r['mean_rel_error_tensorly']:.6f}; per-row difference max "
        f"{r['max_abs_difference_of_row_errors']:.2e} absolute"
    )


if __name__ == "__main__":
    main()
