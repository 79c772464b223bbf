"""Quality against compression on the SmolLM2-135M embedding: the naive and improved TT.

For every variant the embedding is compressed into a real artifact (through the same
build, verify and apply path a device uses, materialized mode), and the built-in
evaluation text is scored with the ``perplexity`` workload, once with the LM head kept
dense (input embedding only) and, for a subset, with the head tied to the reconstruction.
Token frequencies for ``keep=`` come from the calibration text inside the compression.

    python bench/bench_frontier.py [--window 512] [--max-tokens 2048] [--quick]

Writes bench/results/frontier.json and bench/results/frontier.png (perplexity against
compression ratio, log scale, one series per method family) and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
IMPROVED = "tt keep/center/alloc"

#: (variant, family, also with the head tied)
VARIANTS: list[tuple[str, str, bool]] = [
    ("dense", "dense", False),
    *(
        (f"tt:rank={r}:shape={s}", "tt rank cap", r == 8 and s == "8x8x9")
        for s in ("8x8x9", "4x4x6x6")
        for r in (8, 6, 4)
    ),
    ("tt:eps=0.3", "tt eps", False),
    ("tt:eps=0.5", "tt eps", False),
    ("tt:ratio=2", "tt ratio (uniform eps)", True),
    ("tt:ratio=2:shape=8x8x9:center=true:alloc=adaptive", IMPROVED, False),
    ("tt:ratio=2:shape=8x8x9:keep=12000:center=true", IMPROVED, False),
    ("tt:ratio=2:shape=8x8x9:keep=auto:center=true:alloc=adaptive", IMPROVED, True),
    ("tt:ratio=2:shape=4x4x6x6:keep=auto:center=true:alloc=weighted", IMPROVED, False),
    ("tt:ratio=1.5:shape=8x8x9:keep=8000:center=true:alloc=adaptive", IMPROVED, False),
    ("tt:ratio=1.5:shape=8x8x9:keep=auto:center=true:alloc=adaptive", IMPROVED, True),
    ("tt:ratio=1.5:shape=4x4x6x6:keep=auto:center=true:alloc=weighted", IMPROVED, False),
    ("svd:ratio=2", "svd", False),
    ("int8", "int8", True),
]
QUICK = {
    "dense",
    "tt:ratio=2",
    "tt:ratio=2:shape=8x8x9:keep=auto:center=true:alloc=adaptive",
    "int8",
}


def perplexity(model, tokenizer, params) -> float:
    """Perplexity of the built-in evaluation text through the ``perplexity`` workload."""
    from tasks.workloads import get_task

    prepared = get_task("perplexity").prepare(model, tokenizer, params)
    results = [prepared.run_query(i) for i in range(prepared.num_queries())]
    return next(s.value for s in prepared.scores(results) if s.metric == "perplexity")


def evaluate(spec_text: str, tied: bool, base, tokenizer, ref, params, cache: Path) -> dict:
    """Compress, apply and score one variant; the artifact is deleted afterwards."""
    import shutil

    from tasks.artifacts import apply_artifact, build_artifact, load_artifact
    from tasks.compression import parse_variant

    spec = parse_variant(spec_text)
    row: dict = {"variant": spec.canonical}
    if not spec.needs_artifact:
        ppl = perplexity(base, tokenizer, params)
        return {
            **row,
            "ratio": 1.0,
            "rel_error_mean": 0.0,
            "ppl_input": ppl,
            "ppl_tied": ppl if tied else None,
            "compress_s": 0.0,
        }
    info = build_artifact(ref, spec, cache, model=base, tokenizer=tokenizer)
    artifact = load_artifact(info.path, info.sha256)
    m = info.manifest
    method = m["params"]
    row.update(
        ratio=m["compression_ratio"],
        params=m["compressed_params"],
        rel_error_mean=m["reconstruction_error"],
        compress_s=m["compress_time_s"],
        keep_rows=method.get("keep_rows"),
        shape=method.get("shape"),
        counts=method.get("counts"),
    )
    model = apply_artifact(copy.deepcopy(base), artifact, "materialized")
    row["ppl_input"] = perplexity(model, tokenizer, params)
    row["ppl_tied"] = None
    if tied:
        # the same tensors under the tied head policy (the policy only changes the head)
        tied_artifact = dataclasses.replace(
            artifact, manifest={**artifact.manifest, "head_policy": "tied"}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = apply_artifact(copy.deepcopy(base), tied_artifact, "materialized")
        row["ppl_tied"] = perplexity(model, tokenizer, params)
    shutil.rmtree(info.path, ignore_errors=True)
    return row


def plot(rows: list[dict], dense_ppl: float, path: Path) -> None:
    """Perplexity (log) against compression ratio, one series per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    families = dict.fromkeys(r["family"] for r in rows if r["family"] != "dense")
    for family in families:
        pts = sorted((r["ratio"], r["ppl_input"]) for r in rows if r["family"] == family)
        ax.plot(
            *zip(*pts, strict=True),
            marker="o",
            linestyle="-" if len(pts) > 1 else "",
            label=f"{family} (head dense)",
        )
    tied = sorted(
        (r["ratio"], r["ppl_tied"])
        for r in rows
        if r["ppl_tied"] is not None and r["family"] != "dense"
    )
    if tied:
        ax.plot(
            *zip(*tied, strict=True),
            marker="x",
            linestyle="",
            color="grey",
            label="head tied to the reconstruction",
        )
    ax.axhline(dense_ppl, color="black", linestyle=":", label=f"dense ({dense_ppl:.2f})")
    ax.set_yscale("log")
    ax.set_xlabel("embedding compression ratio")
    ax.set_ylabel("perplexity of the evaluation text")
    ax.set_title("SmolLM2-135M: perplexity against embedding compression")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Run every variant, print the table and write the JSON and PNG results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--quick", action="store_true", help="four variants only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    from tasks.cache import MODELS, cache_path
    from tasks.models import load_model, resolve_model
    from tasks.workloads import get_task

    started = time.perf_counter()
    ref = resolve_model(args.model)
    base, tokenizer = load_model(ref, cache_dir=cache_path(MODELS))
    params = get_task("perplexity").parse_params(
        {"window": args.window, "max_tokens": args.max_tokens}
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="frontier-") as cache:
        for spec, family, tied in VARIANTS:
            if args.quick and spec not in QUICK:
                continue
            t0 = time.perf_counter()
            row = {
                **evaluate(spec, tied, base, tokenizer, ref, params, Path(cache)),
                "family": family,
            }
            row["wall_s"] = round(time.perf_counter() - t0, 2)
            rows.append(row)
            tied_text = "" if row["ppl_tied"] is None else f"  tied {row['ppl_tied']:.4g}"
            print(
                f"{row['variant']:62s} {row['ratio']:6.3f}x  err {row['rel_error_mean']:.3f}"
                f"  ppl {row['ppl_input']:.4g}{tied_text}  ({row['wall_s']:.0f} s)",
                flush=True,
            )
    dense_ppl = next(r["ppl_input"] for r in rows if r["variant"] == "dense")
    for row in rows:
        row["ppl_input_vs_dense"] = row["ppl_input"] / dense_ppl - 1
    result = {
        "model": ref.name,
        "model_sha256": ref.sha256,
        "text": "builtin evaluation text",
        "window": args.window,
        "max_tokens": args.max_tokens,
        "dense_perplexity": dense_ppl,
        "rows": rows,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "total_s": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "frontier.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, dense_ppl, args.out / "frontier.png")
    print(f"\n{'variant':62s} {'ratio':>7s} {'err':>6s} {'ppl':>9s} {'vs dense':>9s} {'tied':>9s}")
    for r in sorted(rows, key=lambda r: (r["family"], r["ratio"])):
        tied_text = "-" if r["ppl_tied"] is None else f"{r['ppl_tied']:.4g}"
        print(
            f"{r['variant']:62s} {r['ratio']:7.3f} {r['rel_error_mean']:6.3f} "
            f"{r['ppl_input']:9.4g} {r['ppl_input_vs_dense']:+9.1%} {tied_text:>9s}"
        )
    print(f"total {result['total_s']} s -> {args.out / 'frontier.json'}")
    return result


if __name__ == "__main__":
    main()
