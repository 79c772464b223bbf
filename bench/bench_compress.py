"""Batched TT-SVD against the published per-row tensorly loop, on the SmolLM2 embedding.

Both implementations decompose the same 49152 x 576 table with the same tensor shape and
rank cap, in one run. The batched implementation runs over every row; the tensorly loop
runs over a random sample of rows and its time is extrapolated linearly to the whole table
(its cost per row does not depend on the row). Only the decompositions are timed; the
reconstruction errors of the sampled rows are then measured from the stored cores of both.

    python bench/bench_compress.py [--sample 2000] [--shape 8x8x9] [--rank 8]

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
    """Run the comparison, print it and write the JSON result."""
    args = _parse_args(argv)
    import torch

    from tasks.compression.ttsvd import default_workers

    ref, table = _load_table(args.model)
    shape = tuple(int(s) for s in args.shape.split("x"))
    caps = (args.rank,) * (len(shape) - 1)
    result = {
        "model": ref.name,
        "model_sha256": ref.sha256,
        "table": [int(s) for s in table.shape],
        "shape": list(shape),
        "rank_cap": list(caps),
        **measure(table, shape, caps, args.sample),
        "threads": torch.get_num_threads(),
        "workers": default_workers(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    _print_summary(result, args.shape, args.rank)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  written to {args.out}")
    return result


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--shape", default="8x8x9")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument(
        "--sample",
        type=int,
        default=2000,
        help="rows decomposed by the tensorly loop (extrapolated)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def _load_table(model: str) -> tuple[Any, Any]:
    """The resolved model and its token-embedding table (float32, contiguous)."""
    from tasks.cache import MODELS, cache_path
    from tasks.models import embedding_table, load_model, resolve_model

    ref = resolve_model(model)
    loaded, _ = load_model(ref, with_tokenizer=False, cache_dir=cache_path(MODELS))
    return ref, embedding_table(loaded).float().contiguous()


def measure(table: Any, shape: tuple[int, ...], caps: tuple[int, ...], sample_rows: int) -> dict:
    """Batched TT-SVD of the whole table against the tensorly loop on a row sample
    (extrapolated to every row), side by side; timings and per-row errors."""
    import torch

    from tasks.compression.base import relative_row_errors
    from tasks.compression.tensorly_impl import decompose_row, full_rank_list, tt_loop_table
    from tasks.compression.ttsvd import tt_svd_table

    rows = int(table.shape[0])
    sample = torch.randperm(rows, generator=torch.Generator().manual_seed(0))[:sample_rows]
    tt_svd_table(table[:4096], shape, max_ranks=caps)  # warm-up (thread pool, kernels)
    started = time.perf_counter()
    ours = tt_svd_table(table, shape, max_ranks=caps)
    batched_s = time.perf_counter() - started

    started = time.perf_counter()
    ref_result = tt_loop_table(table, shape, max_ranks=caps, rows=sample)
    loop_sample_s = time.perf_counter() - started
    # tt_loop_table also measures each row's error; time the bare decomposition loop too
    data, rank = table.double().numpy(), full_rank_list(shape, caps)
    started = time.perf_counter()
    for i in sample.tolist():
        decompose_row(data[i], shape, rank)
    loop_bare_s = time.perf_counter() - started
    loop_full_s = loop_bare_s * rows / len(sample)

    ours_err = relative_row_errors(table[sample], ours.cores.reconstruct(torch.float64)[sample])
    ref_err = ref_result.row_errors
    rel_diff = (ours_err - ref_err).abs() / ref_err.clamp_min(1e-12)
    return {
        "batched_s": round(batched_s, 3),
        "tensorly_sample_rows": len(sample),
        "tensorly_sample_s": round(loop_bare_s, 3),
        "tensorly_sample_with_error_eval_s": round(loop_sample_s, 3),
        "tensorly_extrapolated_s": round(loop_full_s, 3),
        "tensorly_extrapolated": True,
        "speedup": round(loop_full_s / batched_s, 2),
        "mean_rel_error_batched": float(ours_err.mean()),
        "mean_rel_error_tensorly": float(ref_err.mean()),
        "max_rel_difference_of_row_errors": float(rel_diff.max()),
        "max_abs_difference_of_row_errors": float((ours_err - ref_err).abs().max()),
    }


def _print_summary(result: dict, shape_text: str, rank: int) -> None:
    rows, dim = result["table"]
    sampled = result["tensorly_sample_rows"]
    print(f"table {rows} x {dim}, shape {shape_text}, rank cap {rank}, {result['threads']} threads")
    print(f"  batched TT-SVD, all {rows} rows:            {result['batched_s']:8.2f} s")
    print(f"  tensorly loop, {sampled} sampled rows:        {result['tensorly_sample_s']:8.2f} s")
    print(
        f"  tensorly loop, extrapolated to {rows} rows: "
        f"{result['tensorly_extrapolated_s']:8.2f} s (linear extrapolation from the sample)"
    )
    print(f"  speed-up: {result['tensorly_extrapolated_s'] / result['batched_s']:.1f}x")
    print(
        f"  mean relative error: batched {result['mean_rel_error_batched']:.6f}, "
        f"tensorly {result['mean_rel_error_tensorly']:.6f}"
    )
    print(
        f"  per-row error difference on the sample: max relative "
        f"{result['max_rel_difference_of_row_errors']:.2e}, max absolute "
        f"{result['max_abs_difference_of_row_errors']:.2e}"
    )


if __name__ == "__main__":
    main()
