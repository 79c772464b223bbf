"""Inference overhead of a compressed embedding on this machine: latency and memory.

The same ``generate`` queries (the registered workload: greedy, a fixed number of new
tokens, built-in prompts) run on three copies of the model held side by side:

* ``dense``: the model as loaded;
* ``tt-on-the-fly``: the input embedding replaced by the TT artifact, each requested row
  rebuilt from its cores at every lookup;
* ``tt-materialized``: the same artifact, its table rebuilt once into a dense table.

After one warm-up query per copy, the queries run interleaved (round ``r`` runs query
``r`` on every copy, in an order rotated each round) so that slow drift of the machine
(temperature, other load) falls on every copy alike. Reported per copy: median latency
with its IQR, time to first token, decode time per token, the latency ratio against
dense paired by query, whether the output equals dense's, the bytes held by the
embedding and head modules, and the process RSS growth from loading and from replacing
the embedding. A micro-benchmark of the bare embedding lookup isolates its cost.

``--tied VARIANT`` (repeatable, e.g. ``--tied int8:head=tied --tied mixed:bits=8:head=tied``)
adds a copy per variant whose LM head computes the logits from the compressed table (the
kernel chosen by timing at load, see ``tasks/compression/head.py``); those copies report
the decode time per token against dense, the head alone per decoded token (and every
kernel candidate's time), and peak RSS of a fresh process against dense. ``--tied-only``
leaves out the two copies of ``--variant``.

A last copy, ``no-head (floor)``, is the dense model whose LM head returns zeros at no
cost: its decode time per token is the floor that no head, however compressed or fast,
can go below, so ``dense / floor`` is the largest decode speed-up a head can give on this
machine (its outputs differ from dense by design; ``--no-floor`` leaves it out).

    python -m bench.bench_inference [--quick] [--queries 8] [--new-tokens 32]

Writes ``bench/results/inference.json``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.common import rss_bytes, sig, spread, time_repeated, write_result  # noqa: E402
from tasks.cache import ARTIFACTS, MODELS, cache_path  # noqa: E402
from tasks.numbers import MISSING  # noqa: E402

NAME = "inference"
#: the copy whose LM head costs nothing (the decode floor)
FLOOR = "no-head (floor)"
PROBE_PREFIX = "MEMORY "
#: copy name -> embedding mode passed to apply_artifact (None: the dense model untouched)
#: the tied-head copies of a run without --tied: the 16-bit float, int8 and mixed heads
DEFAULT_TIED = (
    "fp16:head=tied",
    "bf16:head=tied",
    "int8:head=tied",
    "mixed:bits=8:head=tied",
    "mixed:bits=4:head=tied",
)
MODES: dict[str, str | None] = {
    "dense": None,
    "tt-on-the-fly": "on-the-fly",
    "tt-materialized": "materialized",
}


def load_copy(ref: Any, models_dir: Path, artifact: Any, mode: str | None) -> dict[str, Any]:
    """Load one copy of the model and apply the artifact in ``mode`` (None: dense)."""
    import warnings

    from tasks.artifacts import apply_artifact
    from tasks.compression.embedding import resident_bytes
    from tasks.models import load_model

    started = time.perf_counter()
    model, tokenizer = load_model(ref, cache_dir=models_dir)
    if mode is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the head=tied quality warning
            apply_artifact(model, artifact, mode)
    head = model.get_output_embeddings()
    choice = getattr(head, "choice", None)
    return {
        "model": model,
        "tokenizer": tokenizer,
        "load_s": time.perf_counter() - started,
        "embedding_module": type(model.get_input_embeddings()).__name__,
        "head_module": type(head).__name__ if head is not None else None,
        "head_kernel": choice.to_dict() if choice is not None else None,
        "embedding_resident_bytes": resident_bytes(model.get_input_embeddings()),
        "head_resident_bytes": resident_bytes(head) if head is not None else None,
    }


class FreeHead:
    """An LM head that returns zero logits without reading any weight (the decode floor)."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def module(self) -> Any:
        import torch
        from torch import nn

        vocab = self.vocab_size

        class _Zeros(nn.Module):
            def forward(self, hidden: torch.Tensor) -> torch.Tensor:
                return hidden.new_zeros(*hidden.shape[:-1], vocab)

        return _Zeros()


def floor_copy(ref: Any, models_dir: Path) -> dict[str, Any]:
    """The dense model with an LM head that costs nothing (see :class:`FreeHead`)."""
    from tasks.artifacts import _untie
    from tasks.models import load_model

    started = time.perf_counter()
    model, tokenizer = load_model(ref, cache_dir=models_dir)
    _untie(model)
    model.set_output_embeddings(FreeHead(model.config.vocab_size).module())
    return {
        "model": model,
        "tokenizer": tokenizer,
        "load_s": time.perf_counter() - started,
        "embedding_module": type(model.get_input_embeddings()).__name__,
        "head_module": "zero logits (no weights read)",
        "head_kernel": None,
        "embedding_resident_bytes": 0,
        "head_resident_bytes": 0,
    }


def head_time(model: Any, repetitions: int) -> dict[str, float]:
    """Wall time of the LM head alone for one decoded token (hidden state of the model's
    scale: the final norm's output of a real forward pass)."""
    import torch

    head = model.get_output_embeddings()
    with torch.inference_mode():
        hidden = model.base_model(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state[:, -1:]
        return time_repeated(lambda: head(hidden), repetitions=repetitions, warmup=3).to_dict()


def memory_probe(model: str, artifact_path: str | None, mode: str | None) -> dict[str, Any]:
    """RSS of a fresh process: before loading, after loading, after the swap, after a query.

    Runs in a child process of its own (``--memory-probe``), so that the other copies and
    the allocator's history do not blur the figures.
    """
    import resource

    from tasks.artifacts import apply_artifact, load_artifact
    from tasks.models import load_model, resolve_model
    from tasks.workloads import get_task, set_threads

    set_threads(None)
    ref = resolve_model(model)
    gc.collect()
    before = rss_bytes()
    loaded, tokenizer = load_model(ref, cache_dir=cache_path(MODELS))
    gc.collect()
    after_load = rss_bytes()
    if artifact_path is not None and mode is not None:
        apply_artifact(loaded, load_artifact(artifact_path), mode)
    gc.collect()
    after_swap = rss_bytes()
    task = get_task("generate")
    task.prepare(
        loaded, tokenizer, task.parse_params({"num_queries": 1, "max_new_tokens": 4})
    ).run_query(0)
    after_query = rss_bytes()
    if None in (before, after_load, after_swap, after_query):
        return {"rss": None}
    assert before is not None and after_load is not None and after_swap is not None
    assert after_query is not None
    # safetensors are mapped lazily: only after a query has touched every weight does the
    # RSS hold the whole model
    return {
        "rss_model_bytes": after_query - before,
        "rss_after_swap_bytes": after_swap - before,
        "rss_embedding_swap_bytes": after_swap - after_load,
        "rss_after_query_bytes": after_query,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def probe_in_child(model: str, artifact_path: Path | None, mode: str | None) -> dict[str, Any]:
    """Run :func:`memory_probe` in a fresh interpreter and return what it measured."""
    import json
    import subprocess

    argv = [
        sys.executable,
        "-m",
        "bench.bench_inference",
        "--model",
        model,
        "--memory-probe",
        mode or "dense",
        *(["--artifact", str(artifact_path)] if artifact_path is not None else []),
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(PROBE_PREFIX):
            return json.loads(line[len(PROBE_PREFIX) :])
    return {"probe_error": (done.stdout + done.stderr)[-800:]}


def lookup_time(model: Any, tokens: int, repetitions: int) -> dict[str, float]:
    """Wall time of the bare input-embedding lookup for ``tokens`` token ids."""
    import torch

    ids = torch.arange(tokens).remainder(model.config.vocab_size).unsqueeze(0)
    module = model.get_input_embeddings()
    with torch.inference_mode():
        return time_repeated(lambda: module(ids), repetitions=repetitions, warmup=3).to_dict()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load the copies, run the interleaved queries and return the result document."""
    import torch

    from tasks.compression import parse_variant
    from tasks.models import resolve_model
    from tasks.workloads import set_threads

    threads = set_threads(args.threads)
    ref = resolve_model(args.model)
    spec = parse_variant(args.variant)
    print(f"model {ref.name}, variant {spec.canonical}, {threads} threads; loading ...")
    copies, artifact, memory, modes_of = load_copies(args, ref, spec)
    results = interleaved_queries(copies, args)
    dense = results["dense"]
    modes = {
        name: mode_summary(name, modes_of[name], results[name], dense, copies[name], args)
        | memory[name]
        for name in copies
    }
    for m in modes.values():
        if m.get("peak_rss_bytes") and modes["dense"].get("peak_rss_bytes"):
            m["peak_rss_ratio_vs_dense"] = m["peak_rss_bytes"] / modes["dense"]["peak_rss_bytes"]
        if m.get("decode_s_per_token") and modes["dense"].get("decode_s_per_token"):
            m["decode_speedup_vs_dense"] = (
                modes["dense"]["decode_s_per_token"]["median"] / m["decode_s_per_token"]["median"]
            )
    manifest = artifact.manifest if artifact is not None else {}
    floor = modes.get(FLOOR, {}).get("decode_speedup_vs_dense")
    return {
        "model": ref.name,
        "model_sha256": ref.sha256,
        "variant": spec.canonical if artifact is not None else None,
        "artifact": {
            "compression_ratio": manifest.get("compression_ratio"),
            "reconstruction_error": manifest.get("reconstruction_error"),
            "head_policy": manifest.get("head_policy"),
            "base_head_tied": manifest.get("base_head_tied"),
            "payload_bytes": manifest.get("payload_bytes"),
            "embedding_bytes_fp32": manifest.get("embedding_bytes_fp32"),
        },
        "queries": args.queries,
        "max_new_tokens": args.new_tokens,
        "prompt_tokens": [q.prompt_tokens for q in dense],
        "warmup_queries": args.warmup,
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "order": "interleaved: round r runs query r on every copy, order rotated each round",
        "memory_note": (
            "process RSS: growth of a fresh process per copy from before loading to "
            "after one short query (weights are mapped lazily, the query touches them); "
            "under head=keep-dense the LM head keeps the dense table resident; "
            "peak_rss_bytes: the fresh process's peak resident set (ru_maxrss)"
        ),
        "tied_variants": list(args.tied),
        "floor": FLOOR if args.floor else None,
        "floor_note": (
            "the dense model with an LM head that reads no weights (zero logits): its "
            "decode time per token is the floor for any head; dense / floor is the largest "
            "decode speed-up a head can give here"
        ),
        "decode_speedup_ceiling_from_head": floor,
        "tied_artifacts": args.tied_artifacts,
        "modes": modes,
    }


def load_copies(
    args: argparse.Namespace, ref: Any, spec: Any
) -> tuple[dict[str, dict[str, Any]], Any, dict[str, dict[str, Any]], dict[str, str | None]]:
    """The dense copy, one copy per embedding mode of the variant's artifact and one per
    ``--tied`` variant; the artifact, each copy's memory measured in a fresh process, and
    each copy's embedding mode."""
    from tasks.artifacts import build_artifact, load_artifact
    from tasks.compression import parse_variant
    from tasks.models import load_model

    models_dir = cache_path(MODELS)
    # the first load of a GGUF converts it into the cache; do that apart, so that every copy
    # below is loaded the same way, from the same cached files
    load_model(ref, cache_dir=models_dir, with_tokenizer=False)
    gc.collect()
    copies: dict[str, dict[str, Any]] = {"dense": load_copy(ref, models_dir, None, None)}
    artifact, modes, paths = None, {"dense": None}, {"dense": None}
    if not args.tied_only:
        info = build_artifact(
            ref,
            spec,
            cache_path(ARTIFACTS),
            model=copies["dense"]["model"],
            tokenizer=copies["dense"]["tokenizer"],
        )
        if info is None:
            raise SystemExit(f"variant {spec.canonical} has no artifact to compare with dense")
        artifact = load_artifact(info.path, info.sha256)
        modes = dict(MODES)
        paths = {name: info.path for name in modes}
    tied = {}
    for text in args.tied:
        tied_spec = parse_variant(text)
        if tied_spec.head != "tied":
            raise SystemExit(f"--tied {text}: the variant needs head=tied")
        tied_info = build_artifact(
            ref,
            tied_spec,
            cache_path(ARTIFACTS),
            model=copies["dense"]["model"],
            tokenizer=copies["dense"]["tokenizer"],
        )
        assert tied_info is not None
        name = tied_spec.canonical
        modes[name], paths[name] = "on-the-fly", tied_info.path
        tied[name] = load_artifact(tied_info.path, tied_info.sha256)
        args.tied_artifacts[name] = {
            k: tied[name].manifest.get(k)
            for k in ("compression_ratio", "payload_bytes", "reconstruction_error")
        }
    print("memory probes (one fresh process per copy) ...")
    memory = {name: probe_in_child(args.model, paths[name], mode) for name, mode in modes.items()}
    for name, mode in modes.items():
        if mode is not None:
            copies[name] = load_copy(ref, models_dir, tied.get(name, artifact), mode)
    if args.floor:
        copies[FLOOR], modes[FLOOR], memory[FLOOR] = floor_copy(ref, models_dir), None, {}
    return copies, artifact, memory, modes


def interleaved_queries(
    copies: dict[str, dict[str, Any]], args: argparse.Namespace
) -> dict[str, list[Any]]:
    """The generate queries of every copy, side by side: round r runs query r on each
    copy, in an order rotated every round; the query results per copy."""
    from tasks.workloads import get_task

    task = get_task("generate")
    params = task.parse_params({"num_queries": args.queries, "max_new_tokens": args.new_tokens})
    prepared = {
        name: task.prepare(c["model"], c["tokenizer"], params) for name, c in copies.items()
    }
    for p in prepared.values():
        for _ in range(args.warmup):
            p.run_query(args.queries - 1)
    names = list(copies)
    results: dict[str, list[Any]] = {name: [] for name in names}
    for r in range(args.queries):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(prepared[name].run_query(r))
        print(
            f"  round {r + 1}/{args.queries}: "
            + ", ".join(f"{n} {results[n][-1].latency_s:.3f} s" for n in names)
        )
    return results


def mode_summary(
    name: str,
    mode: str | None,
    rows: list[Any],
    dense: list[Any],
    copy: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Latency, decode time, ratio to dense, identical outputs and lookup time of one copy."""
    # the agent's own figure (tasks.workloads.base.QueryResult.decode_s_per_token)
    decode = [q.decode_s_per_token for q in rows if q.decode_s_per_token is not None]
    latency = spread([q.latency_s for q in rows])
    return {
        "embedding_mode": mode or "dense",
        "decode_s_per_token_per_query": decode,
        "latency_s_per_query": [q.latency_s for q in rows],
        "head_1_token_s": head_time(copy["model"], args.lookup_reps),
        "latency_s": latency.to_dict(),
        "ttft_s": spread([q.ttft_s for q in rows if q.ttft_s is not None]).to_dict(),
        "decode_s_per_token": spread(decode).to_dict() if decode else None,
        "tokens_per_s_median": rows[0].output_tokens / latency.median,
        "latency_ratio_vs_dense": spread(
            [q.latency_s / d.latency_s for q, d in zip(rows, dense, strict=True)]
        ).to_dict(),
        "outputs_identical_to_dense": sum(
            q.output_sha256 == d.output_sha256 for q, d in zip(rows, dense, strict=True)
        ),
        "lookup_1_token_s": lookup_time(copy["model"], 1, args.lookup_reps),
        "lookup_64_tokens_s": lookup_time(copy["model"], 64, args.lookup_reps),
        **{k: v for k, v in copy.items() if k not in ("model", "tokenizer")},
    }


def print_summary(doc: dict[str, Any]) -> None:
    """A short table on stdout."""
    what = (
        f"{doc['variant']} (ratio {sig(doc['artifact']['compression_ratio'])}x), "
        if doc["variant"]
        else ""
    )
    print(
        f"\n{doc['model']}, {what}{doc['queries']} queries x "
        f"{doc['max_new_tokens']} new tokens, {doc['threads']} threads"
    )
    print(
        f"{'copy':28} {'median s':>9} {'IQR s':>8} {'TTFT s':>8} {'x dense':>8} "
        f"{'same out':>8} {'emb MiB':>8} {'RSS MiB':>8} {'peak MiB':>8} "
        f"{'decode ms':>9} {'head ms':>8} kernel"
    )
    for name, m in doc["modes"].items():
        rss = m.get("rss_model_bytes")
        print(
            f"{name:28} {sig(m['latency_s']['median']):>9} {sig(m['latency_s']['iqr']):>8} "
            f"{sig(m['ttft_s']['median']):>8} "
            f"{sig(m['latency_ratio_vs_dense']['median']):>8} "
            f"{m['outputs_identical_to_dense']:>5}/{doc['queries']:<2} "
            f"{sig(m['embedding_resident_bytes'] / 2**20):>8} "
            f"{sig(rss / 2**20) if rss is not None else MISSING:>8} "
            f"{sig(m['peak_rss_bytes'] / 2**20) if m.get('peak_rss_bytes') else MISSING:>8} "
            f"{sig(m['decode_s_per_token']['median'] * 1e3) if m['decode_s_per_token'] else MISSING:>9} "
            f"{sig(m['head_1_token_s']['median'] * 1e3):>8} "
            f"{(m.get('head_kernel') or {}).get('chosen', '-')}"
        )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, write and print its result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--variant", default="tt:ratio=2")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: every usable core)"
    )
    parser.add_argument("--lookup-reps", type=int, default=50)
    parser.add_argument(
        "--results-dir", type=Path, default=ROOT / "bench" / "results", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--tied",
        action="append",
        default=[],
        metavar="VARIANT",
        help="add a copy whose LM head reads this head=tied variant's compressed table",
    )
    parser.add_argument("--tied-only", action="store_true", help="only dense and the --tied copies")
    parser.add_argument(
        "--no-tied",
        action="store_true",
        help="no tied-head copies (default: " + ", ".join(DEFAULT_TIED) + ")",
    )
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false", help="leave out the no-head copy"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 queries x 8 new tokens")
    parser.add_argument(
        "--memory-probe",
        choices=("dense", *(m for m in MODES.values() if m)),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--artifact", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        import json

        mode = None if args.memory_probe == "dense" else args.memory_probe
        print(PROBE_PREFIX + json.dumps(memory_probe(args.model, args.artifact, mode)))
        return 0
    if args.quick:
        args.queries, args.new_tokens, args.lookup_reps = 3, 8, 10
    if not args.tied and not args.no_tied:
        args.tied = list(DEFAULT_TIED)
    args.tied_artifacts = {}
    from tasks.errors import TslmError

    try:
        doc = run(args)
    except TslmError as exc:
        print(f"error: {exc}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2
    path = write_result(NAME, doc, quick=args.quick, results_dir=args.results_dir)
    print_summary(doc)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
