"""Task quality on the default model: lm-eval-exact scoring speed, and smoke-set accuracy.

Two parts, on SmolLM2-135M-Instruct with ``--threads`` torch threads (2 by default):

* **speed**: the ``choice`` task's items (the built-in smoke set) scored by tslm-fleet and
  by lm-evaluation-harness's own Hugging Face wrapper (``HFLM.loglikelihood``, batch size
  1 as lm-eval defaults to, and ``--lm-eval-batch``) on the same model object, chunk by
  chunk with the sides interleaved so that drift of the machine falls on all alike.
  Reported: items/s of each (median over rounds, tokenization included on both sides),
  the ratio (median over chunks of the other side's time over ours), and whether every
  per-item decision (acc and acc_norm) is identical.
* **accuracy**: ``choice`` (acc, acc_norm) and ``last-word`` (acc, word perplexity) on
  the built-in smoke sets for dense, TT and the baselines. The smoke sets were written
  for this project: their numbers are NOT comparable to published benchmark figures.

    python -m bench.bench_quality [--quick] [--threads 2] [--rounds 3]

Writes ``bench/results/quality.json``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.common import sig, write_result  # noqa: E402
from tasks.cache import ARTIFACTS, MODELS, cache_path  # noqa: E402

NAME = "quality"
VARIANTS = (
    "dense",
    "tt:rank=8:shape=8x8x9",
    "tt:ratio=2",
    "tt:ratio=2:shape=4x4x6x6:keep=auto:center=true:alloc=weighted",
    "svd:ratio=2",
    "int8",
)
QUICK_VARIANTS = ("dense", "tt:ratio=2")
SMOKE_NOTE = "smoke sets written for tslm-fleet; not comparable to published benchmark numbers"


def prepared_task(model: Any, tokenizer: Any, task: str, limit: int | None) -> Any:
    from tasks.workloads import get_task

    registered = get_task(task)
    return registered.prepare(model, tokenizer, registered.parse_params({"limit": limit}))


def ours_chunk(prepared: Any, index: int) -> tuple[float, list[tuple]]:
    """(seconds, per-item (acc, acc_norm)) of one query (a chunk of items) of ours."""
    started = time.perf_counter()
    result = prepared.run_query(index)
    seconds = time.perf_counter() - started
    return seconds, [(r["acc"], r["acc_norm"]) for r in result.extra["items"]]


def lm_eval_chunk(lm: Any, items: list[Any]) -> tuple[float, list[tuple]]:
    """(seconds, per-item (acc, acc_norm)) of lm-eval's wrapper on the same requests.

    The decisions follow lm-eval's multiple-choice ``process_results``: numpy's argmax of
    the log-likelihoods, and of them over each choice's length in characters.
    """
    import numpy as np
    from lm_eval.api.instance import Instance

    requests = [
        Instance("loglikelihood", {}, (item.context, " " + choice), k)
        for item in items
        for k, choice in enumerate(item.choices)
    ]
    started = time.perf_counter()
    answers = lm.loglikelihood(requests, disable_tqdm=True)
    seconds = time.perf_counter() - started
    decisions, at = [], 0
    for item in items:
        lls = np.array([ll for ll, _ in answers[at : at + len(item.choices)]])
        at += len(item.choices)
        lengths = np.array([float(len(c)) for c in item.choices])
        decisions.append(
            (int(np.argmax(lls) == item.gold), int(np.argmax(lls / lengths) == item.gold))
        )
    return seconds, decisions


def speed(model: Any, tokenizer: Any, limit: int | None, rounds: int, batch: int) -> dict:
    """Items/s of tslm-fleet and of lm-eval's HFLM (batch 1 and ``batch``), side by side.

    The items are cut into the chunks one query of ours scores; every round runs each
    chunk on every side back to back (the order rotated per chunk), so that load on the
    machine falls on the sides alike. The ratio is the median over (round, chunk) of the
    other side's time over ours.
    """
    from bench.lm_eval_reference import lm_eval_model

    prepared = prepared_task(model, tokenizer, "choice", limit)
    chunks = [list(group) for group in prepared.groups]
    lms = {f"lm-eval HFLM batch {b}": lm_eval_model(model, tokenizer, b) for b in (1, batch)}
    sides = {"tslm-fleet": lambda k: ours_chunk(prepared, k)}
    for name, lm in lms.items():
        sides[name] = lambda k, lm=lm: lm_eval_chunk(lm, chunks[k])
    names = list(sides)
    for run in sides.values():  # warm-up, not timed
        run(0)
    seconds = {n: [0.0] * rounds for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    decisions: dict[str, list] = {n: [] for n in names}
    for r in range(rounds):
        for k in range(len(chunks)):
            times = {}
            shift = (r + k) % len(names)
            for name in names[shift:] + names[:shift]:
                times[name], made = sides[name](k)
                seconds[name][r] += times[name]
                if r == 0:
                    decisions[name] += made
            for name in names:
                ratios[name].append(times[name] / times["tslm-fleet"])
        print(
            f"round {r + 1}: "
            + ", ".join(
                f"{n} {len(prepared.data.items) / seconds[n][r]:.3g} items/s" for n in names
            ),
            flush=True,
        )
    return _speed_summary(len(prepared.data.items), rounds, seconds, ratios, decisions)


def _speed_summary(items: int, rounds: int, seconds: dict, ratios: dict, decisions: dict) -> dict:
    out: dict[str, Any] = {"items": items, "rounds": rounds, "sides": {}}
    for name in seconds:
        rates = [items / s for s in seconds[name]]
        out["sides"][name] = {
            "items_per_s": statistics.median(rates),
            "items_per_s_rounds": rates,
            "identical_decisions": decisions[name] == decisions["tslm-fleet"],
            "ratio_ours_vs_this": statistics.median(ratios[name]),
        }
    reference = [n for n in seconds if n != "tslm-fleet"]
    fastest = max(reference, key=lambda n: out["sides"][n]["items_per_s"])
    out["fastest_lm_eval"] = fastest
    out["ratio_vs_fastest_lm_eval"] = out["sides"][fastest]["ratio_ours_vs_this"]
    out["identical_decisions"] = all(out["sides"][n]["identical_decisions"] for n in seconds)
    return out


def task_scores(model: Any, tokenizer: Any, task: str, limit: int | None) -> dict[str, Any]:
    prepared = prepared_task(model, tokenizer, task, limit)
    started = time.perf_counter()
    results = [prepared.run_query(i) for i in range(prepared.num_queries())]
    wall_s = time.perf_counter() - started
    scores = {s.metric: s.value for s in prepared.scores(results)}
    return {**scores, "items_per_s": len(results) / wall_s}


def accuracy(ref: Any, base: Any, tokenizer: Any, variants: tuple, limit: int | None) -> list:
    """Smoke-set scores of every variant (artifacts built into the tslm-fleet cache)."""
    from tasks.artifacts import apply_artifact, build_artifact, load_artifact
    from tasks.compression import parse_variant

    rows = []
    for text in variants:
        spec = parse_variant(text)
        row: dict[str, Any] = {"variant": spec.canonical, "ratio": 1.0}
        model = base
        if spec.needs_artifact:
            info = build_artifact(ref, spec, cache_path(ARTIFACTS), model=base, tokenizer=tokenizer)
            row["ratio"] = info.manifest["compression_ratio"]
            model = apply_artifact(copy.deepcopy(base), load_artifact(info.path, info.sha256))
        row["choice"] = task_scores(model, tokenizer, "choice", limit)
        row["last_word"] = task_scores(model, tokenizer, "last-word", limit)
        print(
            f"{row['variant']:60s} {sig(row['ratio'])}x  choice acc {row['choice']['acc']:.3f} "
            f"acc_norm {row['choice']['acc_norm']:.3f}  last-word acc "
            f"{row['last_word']['acc']:.3f} ppl {sig(row['last_word']['word_perplexity'])}",
            flush=True,
        )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 items, 1 round, 2 variants")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each side")
    parser.add_argument("--lm-eval-batch", type=int, default=8, help="lm-eval's other batch")
    args = parser.parse_args(argv)
    import torch

    from tasks.models import load_model, resolve_model

    torch.set_num_threads(args.threads)
    limit = 16 if args.quick else None
    rounds = 1 if args.quick else args.rounds
    ref = resolve_model("default")
    model, tokenizer = load_model(ref, cache_dir=cache_path(MODELS))
    result = {
        "model": ref.name,
        "threads": torch.get_num_threads(),
        "speed": speed(model, tokenizer, limit, rounds, args.lm_eval_batch),
        "note": SMOKE_NOTE,
        "variants": accuracy(
            ref, model, tokenizer, QUICK_VARIANTS if args.quick else VARIANTS, limit
        ),
    }
    s = result["speed"]
    print(
        f"speed: {s['sides']['tslm-fleet']['items_per_s']:.3g} items/s, "
        f"{s['ratio_vs_fastest_lm_eval']:.3g}x {s['fastest_lm_eval']}; identical decisions "
        f"{s['identical_decisions']}",
        flush=True,
    )
    print(write_result(NAME, result, quick=args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
