"""Renderers of the benchmark results: one function per result file, keyed by its stem.

Each turns one ``bench/results/<stem>.json`` into a :class:`Section`: a Markdown table of
its headline figures, a few notes (spread, method, caveats) and one line for README.md.
Figures never carry more than three significant figures; comparisons are ratios.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.common import sig
from bench.sections_repeat import repeat_parts
from bench.sections_scale import loadonce_parts, scale_parts
from tasks.numbers import MISSING
from testbed.truth import BOUNDS

MIB = 2**20


@dataclass(frozen=True)
class Section:
    """What one result contributes: its SUMMARY table and notes, and a README line."""

    lines: list[str]
    readme_line: str
    notes: list[str] = field(default_factory=list)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def with_iqr(s: dict[str, float] | None, scale: float = 1.0) -> str:
    """``median (IQR x)`` of a spread dict written by :func:`bench.common.spread`."""
    if not s:
        return MISSING
    if s.get("n", 1) < 2:
        return sig(s["median"] * scale)
    return f"{sig(s['median'] * scale)} (IQR {sig(s['iqr'] * scale, 2)})"


def pick(row: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` present (not None) in ``row``."""
    for key in keys:
        if row.get(key) is not None:
            return row[key]
    return None


# -- one renderer per result file ------------------------------------------------------------


def compress_section(doc: dict[str, Any]) -> Section:
    if isinstance(doc.get("by_rank"), dict):
        return _compress_by_rank(doc)
    rows, dim = doc["table"]
    shape = "x".join(map(str, doc["shape"]))
    speedup = doc["tensorly_extrapolated_s"] / doc["batched_s"]
    lines = table(
        ["implementation", "rows decomposed", "time s", "mean rel. error"],
        [
            [
                "batched TT-SVD (ours)",
                f"{rows:,}",
                sig(doc["batched_s"]),
                sig(doc["mean_rel_error_batched"]),
            ],
            [
                "tensorly `tensor_train` per-row loop",
                f"{doc['tensorly_sample_rows']:,}",
                sig(doc["tensorly_sample_s"]),
                sig(doc["mean_rel_error_tensorly"]),
            ],
            ["  extrapolated to every row", f"{rows:,}", sig(doc["tensorly_extrapolated_s"]), ""],
        ],
    )
    loop = (
        f"the per-row tensorly loop's time extrapolated linearly from "
        f"{doc['tensorly_sample_rows']:,} of the rows"
        if doc.get("tensorly_extrapolated", True)
        else "the per-row tensorly loop"
    )
    headline = (
        f"batched TT-SVD is {sig(speedup)}x faster than {loop}, on "
        f"the {rows:,} x {dim} table (shape {shape}, rank cap {doc['rank_cap'][0]}; "
        f"per-row errors agree within {sig(doc['max_abs_difference_of_row_errors'], 1)})"
    )
    notes = [
        f"{headline}.",
        "One timed run of each; the loop time is extrapolated linearly "
        f"from {doc['tensorly_sample_rows']:,} random rows; {doc.get('threads')} threads.",
    ]
    return Section(lines, f"**Compression speed**: {headline}.", notes)


def _compress_by_rank(doc: dict[str, Any]) -> Section:
    """bench_compress.py's every-row comparison, one block of rows per rank cap."""
    rows, dim = doc["table"]
    shape = "x".join(map(str, doc["shape"]))
    body = []
    for rank, r in doc["by_rank"].items():
        body += [
            [
                rank,
                "batched TT-SVD (ours), median",
                sig(r["batched_s"]),
                "1",
                sig(r["mean_rel_error_batched"]),
            ],
            [
                rank,
                "`tt:impl=tensorly` (tensorly loop)",
                sig(r["tensorly_s"]),
                sig(r["speedup"]),
                sig(r["mean_rel_error_tensorly"]),
            ],
            [
                rank,
                "bare `tensor_train` loop",
                sig(r["tensorly_bare_loop_s"]),
                sig(r["speedup_vs_bare_loop"]),
                "",
            ],
        ]
    lines = table(["rank cap", "implementation", "time s", "speed-up", "mean rel. error"], body)
    parts = [
        f"rank {rank}: {sig(r['speedup'])}x ({sig(r['speedup_vs_bare_loop'])}x against the bare "
        f"loop; per-row errors agree within {sig(r['max_abs_difference_of_row_errors'], 1)})"
        for rank, r in doc["by_rank"].items()
    ]
    headline = (
        f"batched TT-SVD against the tensorly loop on all {rows:,} x {dim} rows, shape {shape}: "
        + "; ".join(parts)
    )
    notes = [
        f"{headline}.",
        "Every row, no extrapolation, through the method's compress (what an artifact's "
        "compress_time_s records); the batched side is a median of "
        f"{len(next(iter(doc['by_rank'].values()))['batched_runs_s'])} runs, the loops run "
        f"once; {doc.get('threads')} threads on a shared machine, so the figures are noisy.",
    ]
    return Section(lines, f"**Compression speed**: {headline}.", notes)


def frontier_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of frontier.json, whichever list key it uses."""
    rows = pick(doc, "rows", "variants", "results", "points")
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def frontier_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The fields the tables show, as bench_frontier.py names them (older names accepted)."""
    return {
        "variant": pick(row, "variant", "spec") or "?",
        "ratio": pick(row, "ratio", "compression_ratio"),
        "ratio_source": pick(row, "ratio_vs_source"),
        "error": pick(row, "rel_error_mean", "reconstruction_error"),
        "ppl_input": pick(row, "ppl_input", "perplexity"),
        "ppl_tied": _first_text(pick(row, "ppl_tied")),
    }


def _first_text(value: Any) -> Any:
    """A per-text dict (default evaluation text first) read as its first value."""
    if isinstance(value, dict):
        return next(iter(value.values()), None)
    return value


def dense_perplexity(doc: dict[str, Any]) -> float | None:
    """Perplexity of the dense model in frontier.json."""
    if doc.get("dense_perplexity") is not None:
        return doc["dense_perplexity"]
    rows = [frontier_fields(r) for r in frontier_rows(doc)]
    return next((f["ppl_input"] for f in rows if f["variant"] == "dense"), None)


def ppl_text(ppl: float | None, dense: float | None, variant: str) -> str:
    """A perplexity with its change against dense: ``9.23 (+37 %)`` or ``4,320 (640x)``."""
    if ppl is None or not dense or variant == "dense":
        return sig(ppl)
    ratio = ppl / dense
    sign = "+" if ratio >= 1 else "-"
    change = f"{sign}{sig(100 * abs(ratio - 1), 2)} %" if ratio < 2 else f"{sig(ratio, 2)}x"
    return f"{sig(ppl)} ({change})"


def frontier_section(doc: dict[str, Any]) -> Section:
    if isinstance(doc.get("goal_tt"), dict):
        return _frontier_by_text(doc)
    fields = [frontier_fields(r) for r in frontier_rows(doc)]
    dense = dense_perplexity(doc)
    header = [
        "variant",
        "compression ratio",
        "rel. reconstruction error",
        "ppl (input only)",
        "ppl (tied head)",
    ]
    lines = table(
        header,
        [
            [
                f"`{f['variant']}`",
                sig(f["ratio"]),
                sig(f["error"]),
                ppl_text(f["ppl_input"], dense, f["variant"]),
                ppl_text(f["ppl_tied"], dense, f["variant"]),
            ]
            for f in fields
        ],
    )
    lines += ["", "![perplexity vs compression ratio](frontier.png)"]
    headline = f"{len(fields)} variants measured"
    for label, family in (("of all methods", ""), ("of the tensor-train variants", "tt:")):
        best = [
            f
            for f in fields
            if f["ratio"]
            and f["ratio"] >= 1.9
            and f["ppl_input"]
            and str(f["variant"]).startswith(family)
        ]
        if best and dense:
            top = min(best, key=lambda f: f["ppl_input"])
            headline += (
                f"; at 1.9x or more the best input-only perplexity {label} is "
                f"{ppl_text(top['ppl_input'], dense, top['variant'])} (`{top['variant']}`, "
                f"{sig(top['ratio'])}x)"
            )
    if dense:
        headline += f", against {sig(dense)} dense"
    notes = [
        f"{headline}.",
        "Perplexity (percentage or factor against dense) on the "
        f"{doc.get('text', 'evaluation text')}"
        + (
            f", {doc['max_tokens']} tokens in windows of {doc['window']}"
            if doc.get("max_tokens") and doc.get("window")
            else ""
        )
        + ".",
    ]
    return Section(lines, f"**Quality frontier**: {headline}.", notes)


def _percent(change: float | None) -> str:
    return MISSING if change is None else f"{100 * change:+.2f} %"


def _frontier_by_text(doc: dict[str, Any]) -> Section:
    """bench_frontier.py's every-text frontier: both ratios, changes per text, the goal."""
    texts, evaluation = doc["texts"], doc["evaluation_texts"]
    rows = sorted(frontier_rows(doc), key=lambda r: r["ratio"])
    body = []
    for r in rows:
        tied = r.get("ppl_tied_change")
        body.append(
            [
                f"`{r['variant']}`" + (" **(frontier)**" if r.get("on_frontier") else ""),
                sig(r["ratio"]),
                sig(r.get("ratio_vs_source")),
                sig(r["size_bytes"] / MIB) if r.get("size_bytes") else MISSING,
                *(_percent(r["ppl_change"].get(t)) for t in texts),
                _percent(max(tied.values())) if tied else "",
            ]
        )
    source = next((r.get("source_format") for r in rows if r.get("source_format")), "?")
    lines = table(
        [
            "variant",
            "ratio vs fp32",
            f"ratio vs source ({source})",
            "MiB on disk",
            *(
                f"ppl change, {t}" + (" (selection)" if t == doc["calibration_text"] else "")
                for t in texts
            ),
            "tied head, worst",
        ],
        body,
    )
    lines += ["", "![worst perplexity increase vs compression ratio](frontier.png)"]
    goal = doc["goal_tt"]
    verdict = "met" if goal.get("met") else "not met"
    changes = ", ".join(f"{t} {_percent(c)}" for t, c in (goal.get("changes") or {}).items())
    headline = (
        f"goal 1 ({goal['statement']}) {verdict}: `{goal.get('variant')}` chosen on the "
        f"calibration text, {sig(goal.get('ratio'))}x, {changes}"
    )
    notes = [
        f"{headline}.",
        f"Perplexity change against dense on {', '.join(texts)} "
        f"({doc['max_tokens']} tokens each, windows of {doc['window']}); the frontier is drawn "
        f"on the worst change over {', '.join(evaluation)}, LM head dense.",
        *doc.get("caveats", []),
    ]
    return Section(lines, f"**Quality frontier**: {headline}.", notes)


def inference_section(doc: dict[str, Any]) -> Section:
    rows = []
    for name, m in doc["modes"].items():
        rows.append(
            [
                name,
                with_iqr(m["latency_s"]),
                with_iqr(m.get("ttft_s")),
                with_iqr(m.get("decode_s_per_token"), 1000),
                with_iqr(m.get("latency_ratio_vs_dense")),
                f"{m.get('outputs_identical_to_dense', 'n/a')}/{doc['queries']}",
                sig(m["embedding_resident_bytes"] / MIB),
                sig(m["rss_model_bytes"] / MIB)
                if m.get("rss_model_bytes") is not None
                else MISSING,
            ]
        )
    lines = table(
        [
            "copy",
            "latency s",
            "TTFT s",
            "decode ms/token",
            "x dense (paired)",
            "output = dense",
            "embedding MiB",
            "process RSS MiB",
        ],
        rows,
    )
    modes = doc["modes"]
    tied_lines, tied_headline = _tied_heads(doc)
    lines += tied_lines
    otf = modes.get("tt-on-the-fly", {}).get("latency_ratio_vs_dense", {}).get("median")
    mat = modes.get("tt-materialized", {}).get("latency_ratio_vs_dense", {}).get("median")
    emb_dense = modes["dense"]["embedding_resident_bytes"] / MIB
    emb_tt = modes.get("tt-on-the-fly", {}).get("embedding_resident_bytes", 0) / MIB
    art = doc.get("artifact", {})
    headline = (
        f"`{doc['variant']}` ({sig(art.get('compression_ratio'))}x): generate latency "
        f"{sig(otf)}x dense on the fly, {sig(mat)}x materialized; input embedding "
        f"{sig(emb_dense)} MiB -> {sig(emb_tt)} MiB"
    )
    notes = [
        f"{headline}.",
        f"{doc['queries']} queries x {doc['max_new_tokens']} new tokens, greedy, after "
        f"{doc['warmup_queries']} warm-up; {doc['order']}; {doc['threads']} threads.",
        f"Head policy `{art.get('head_policy')}`. Memory: {doc.get('memory_note', 'n/a')}.",
    ]
    if not doc.get("variant"):  # tied-head copies only
        return Section(lines, f"**Inference**: {tied_headline}", notes[1:])
    if tied_headline:
        notes.append(tied_headline)
    return Section(lines, f"**Inference**: {headline}. {tied_headline}".rstrip(), notes)


def _tied_heads(doc: dict[str, Any]) -> tuple[list[str], str]:
    """Table of the tied-head copies: ratio, decode and head time, peak RSS, kernel."""
    tied = doc.get("tied_artifacts") or {}
    modes = doc["modes"]
    if not tied or "dense" not in modes:
        return [], ""
    dense = modes["dense"]
    rows = [
        [
            "dense (fp32 head)",
            "1x",
            with_iqr(dense.get("decode_s_per_token"), 1000),
            "1x",
            sig(dense["head_1_token_s"]["median"] * 1000)
            if dense.get("head_1_token_s")
            else MISSING,
            sig(dense["peak_rss_bytes"] / MIB) if dense.get("peak_rss_bytes") else MISSING,
            "fp32 matmul",
        ]
    ]
    for name, art in tied.items():
        m = modes.get(name)
        if m is None:
            continue
        kernel = (m.get("head_kernel") or {}).get("chosen", MISSING)
        rows.append(
            [
                f"`{name}`",
                f"{sig(art.get('compression_ratio'))}x",
                with_iqr(m.get("decode_s_per_token"), 1000),
                f"{sig(m.get('decode_speedup_vs_dense'))}x",
                sig(m["head_1_token_s"]["median"] * 1000) if m.get("head_1_token_s") else MISSING,
                sig(m["peak_rss_bytes"] / MIB) if m.get("peak_rss_bytes") else MISSING,
                f"`{kernel}`",
            ]
        )
    floor = modes.get(doc.get("floor") or "")
    if floor is not None:
        rows.append(
            [
                "no head at all (floor)",
                MISSING,
                with_iqr(floor.get("decode_s_per_token"), 1000),
                f"{sig(floor.get('decode_speedup_vs_dense'))}x",
                sig(floor["head_1_token_s"]["median"] * 1000)
                if floor.get("head_1_token_s")
                else MISSING,
                MISSING,
                "zero logits, no weights read",
            ]
        )
    lines = [
        "",
        "Tied heads computed from the compressed table (kernel chosen by timing at load):",
        "",
        *table(
            [
                "head",
                "ratio vs fp32",
                "decode ms/token",
                "decode speed-up",
                "head ms/token",
                "peak RSS MiB",
                "kernel",
            ],
            rows,
        ),
    ]
    best = max(
        (n for n in tied if n in modes and modes[n].get("decode_speedup_vs_dense")),
        key=lambda n: modes[n]["decode_speedup_vs_dense"],
        default=None,
    )
    headline = (
        f"Fastest tied head: `{best}`, decode {sig(modes[best]['decode_speedup_vs_dense'])}x "
        f"dense, peak RSS {sig(modes[best].get('peak_rss_ratio_vs_dense'))}x dense."
        if best
        else ""
    )
    if floor is not None and floor.get("decode_speedup_vs_dense"):
        headline += (
            f" With no LM head at all, decode is {sig(floor['decode_speedup_vs_dense'])}x "
            "dense: the most that any head can give on this machine, the rest of the step "
            "being the float32 layers (a head within a few per cent of it is at the floor "
            "within this run's noise)."
        )
    return lines, headline


def fleet_section(doc: dict[str, Any]) -> Section:
    if doc.get("skipped"):
        return Section(
            [], f"**Fleet scaling**: skipped ({doc['skipped']}).", [f"Skipped: {doc['skipped']}."]
        )
    rows = []
    for n, e in doc["by_size"].items():
        if "wall_s" not in e:
            rows.append([n, "failed", "", "", "", ""])
            continue
        rows.append(
            [
                n,
                with_iqr(e["wall_s"]),
                sig(e.get("wall_ratio_vs_1")),
                with_iqr(e["controller_cpu_s"]),
                with_iqr(e["controller_cpu_s_per_device"]),
                sig(e.get("query_latency_s_median")),
            ]
        )
    lines = table(
        [
            "devices",
            "wall s",
            "x 1 device",
            "controller CPU s",
            "CPU s / device",
            "query latency s",
        ],
        rows,
    )
    fit = doc.get("controller_cpu_fit")
    largest = max(doc["by_size"], key=int)
    ratio = doc["by_size"][largest].get("wall_ratio_vs_1")
    headline = f"{largest} devices take {sig(ratio)}x the wall time of 1"
    if fit:
        headline += (
            f"; controller CPU {sig(fit['fixed_cpu_s'])} s fixed + "
            f"{sig(fit['cpu_s_per_device'])} s per device"
        )
    notes = [
        f"{headline}.",
        f"{doc['note']}.",
        f"{doc['repetitions']} repetition(s) per size, after one untimed run that "
        "deployed everything.",
    ]
    return Section(
        lines, f"**Fleet scaling** (fake devices sharing this machine's cores): {headline}.", notes
    )


def db_section(doc: dict[str, Any]) -> Section:
    rows, parts = [], []
    for name, b in doc["backends"].items():
        if "skipped" in b:
            rows.append([name, "skipped", b["skipped"], ""])
            continue
        rows.append(
            [
                name,
                sig(b["power_samples_per_s"]),
                sig(b["query_events_per_s"]),
                f"{sig(b['compare_s'])} s over {b['query_rows']:,} rows",
            ]
        )
        parts.append(
            f"{name} {sig(b['power_samples_per_s'])} power samples/s, "
            f"{sig(b['query_events_per_s'])} query events/s, compare over "
            f"{b['query_rows']:,} rows in {sig(b['compare_s'])} s"
        )
    lines = table(["backend", "power samples/s", "query events/s", "compare query"], rows)
    headline = "; ".join(parts) or "no backend measured"
    goal = doc.get("goal_power_samples_per_s_sqlite")
    notes = [
        f"{headline}.",
        "One timed pass each (no repetitions)."
        + (f" Goal for SQLite: {sig(goal)} power samples/s." if goal else ""),
    ]
    return Section(lines, f"**Database**: {headline}.", notes)


def meters_section(doc: dict[str, Any]) -> Section:
    rows = [
        [
            r["kind"],
            sig(r["nominal_rate_hz"]),
            sig(r["rate_hz"]),
            sig(r["fresh_rate_hz"]),
            str(r["gaps"]),
            sig(r["sampler_cpu_pct"]),
        ]
        for r in doc["rates"]
    ]
    lines = table(["meter", "nominal Hz", "achieved Hz", "fresh Hz", "gaps", "sampler CPU %"], rows)
    resolved = [r for r in doc["integration"] if r["resolved"] and r["max_error_pct"] is not None]
    pulses = [r for r in doc["integration"] if r["trace"].startswith("pulse")]
    worst = max((r["max_error_pct"] for r in resolved), default=None)
    fresh = [
        r["fresh_rate_hz"] / r["nominal_rate_hz"] for r in doc["rates"] if r.get("nominal_rate_hz")
    ]
    cpu = max(r["sampler_cpu_pct"] for r in doc["rates"])
    headline = (
        f"fresh samples at {sig(min(fresh))}-{sig(max(fresh))}x the nominal rate, "
        f"sampler CPU <= {sig(cpu)} % of a core, integration error <= {sig(worst)} % "
        "where the rate resolves the trace"
    )
    notes = [
        f"{headline}.",
        "Sub-period pulses flagged as under-resolved: "
        + ", ".join(f"{r['meter']} {r['under_resolved']}" for r in pulses)
        + ".",
    ]
    for r in doc.get("end_to_end", []):
        notes.append(
            f"End to end ({r['meter']}, {r['window_s']} s window): error "
            f"{sig(r['error_pct'])} % over {r['fresh_samples']} fresh samples."
        )
    return Section(
        lines,
        f"**Meters** (the real drivers against byte-level emulators, not physical meters): "
        f"{headline}.",
        notes,
    )


def _pct(value: float | None) -> str:
    """A relative error as a percentage, two significant figures, none below 0.01 %
    (the traces and meters resolve no finer)."""
    if value is None:
        return MISSING
    if abs(value) < 1e-4:
        return "< 0.01 %"
    return f"{sig(100 * value, 2)} %"


def truth_section(doc: dict[str, Any]) -> Section:
    rows = [
        [
            f["family"],
            f"{sig(f['window_s'])} s",
            f"{_pct(f['energy']['median'])} / {_pct(f['energy']['worst'])} (n {f['energy']['n']})",
            f"{_pct(f['net']['worst'])}",
            f"{_pct(f['idle']['worst'])}",
            ", ".join(f"{sig(x, 2)} s" if x is not None else "none" for x in f["lag_s"]),
            f"{_pct(f['bound_energy'])} / {_pct(f['bound_net'])} / {_pct(f['bound_idle'])}",
            "yes" if f["holds"] else "NO",
        ]
        for f in doc["families"]
    ]
    lines = table(
        [
            "meter",
            "window",
            "energy error median / worst",
            "net worst",
            "idle worst",
            "lag found",
            "bound energy / net / idle",
            "held",
        ],
        rows,
    )
    lag = doc["lag"]
    with_, without = lag["with"]["query_energy"], lag["without"]["query_energy"]
    found = ", ".join(
        f"{sig(x, 2)} s" if x is not None else "not established (no shift)"
        for x in lag["with"]["found_lag_s"]
    )
    problems = "; ".join(lag["with"].get("problems", []))
    within = (
        f" ({lag['with']['queries_within_bound']} of {with_['n']} queries within the "
        f"{_pct(lag['bound_energy'])} bound with ranging, "
        f"{lag['without']['queries_within_bound']} of {without['n']} without)"
        if "bound_energy" in lag
        else ""
    )
    lag_line = (
        f"{sig(lag['injected_s'])} s of lag on a 10 Hz PMIC-style meter, "
        f"{sig(lag['query_s'])} s queries of alternating load: lag found {found}"
        f"{f' ({problems})' if problems else ''}; per-query "
        f"energy error median {_pct(with_['median'])}, worst {_pct(with_['worst'])} with "
        f"ranging, median {_pct(without['median'])}, worst {_pct(without['worst'])} without"
        f"{within}"
    )
    worst = ", ".join(
        f"{f['family']} {_pct(f['energy']['worst'])} on {sig(f['window_s'])} s windows "
        f"(bound {_pct(f['bound_energy'])}, idle {_pct(f['idle']['worst'])} of "
        f"{_pct(f['bound_idle'])})"
        for f in doc["families"]
    )
    notes = [
        f"Worst window energy error against the true trace: {worst}.",
        lag_line + ".",
        f"Load-following meters: {sig(doc['idle_w'])} W idle + {sig(doc['busy_w_per_core'])} W "
        f"per busy core; load average {sig(doc['load_average_1min'])} while measured.",
        *[
            f"{f['family']} bound ({_pct(f['bound_energy'])} on {sig(f['window_s'])} s): "
            f"{f['basis']}"
            for f in doc["families"]
            if f.get("basis")
        ],
        *[f"Caveat: {c}." for c in doc.get("caveats", [])],
    ]
    readme = f"**Energy vs ground truth**: worst window error {worst}; {lag_line}."
    return Section(lines, readme, notes)


def truth_bounds_lines(doc: dict[str, Any]) -> list[str]:
    """Each family's bound, how it was established, and the worst errors measured against
    it (the measurement section of README.md, between the ``bounds`` markers)."""
    rows = [
        [
            f["family"],
            f"{sig(f['window_s'])} s",
            f"{_pct(f['bound_energy'])} / {_pct(f['bound_net'])} / {_pct(f['bound_idle'])}",
            f"{_pct(f['energy']['worst'])} / {_pct(f['net']['worst'])} / "
            f"{_pct(f['idle']['worst'])} ({f['jobs']} jobs, {f['energy']['n']} windows)",
            # the reasoning is code (agent/meters/bounds.py), stated as it stands now
            BOUNDS[f["kind"]].basis if f["kind"] in BOUNDS else f.get("basis") or MISSING,
        ]
        for f in doc["families"]
    ]
    benched = {f["kind"] for f in doc["families"]}  # FNIRSI: no USB device to serve
    rows += [
        [
            b.family,
            f"{sig(b.window_s)} s",
            f"{_pct(b.energy)} / {_pct(b.net)} / {_pct(b.idle)}",
            "in `tests/agent/test_ground_truth.py` only",
            b.basis,
        ]
        for kind, b in BOUNDS.items()
        if kind not in benched
    ]
    date = (doc.get("machine") or {}).get("date", "date unknown")
    quick = " Smoke run (--quick): one job per family." if doc.get("quick") else ""
    return [
        *table(
            [
                "meter",
                "window",
                "bound energy / net / idle",
                "measured worst energy / net / idle",
                "how the bound was established",
            ],
            rows,
        ),
        "",
        f"_Measured by `python -m bench truth` ({date}, load average "
        f"{sig(doc['load_average_1min'])}); the bounds live in `agent/meters/bounds.py`; a "
        f"FNIRSI tester has no USB device to serve, so it is checked by its test only.{quick}_",
    ]


QUALITY_CAPTION = (
    "Smoke-set accuracy: the built-in smoke sets were written for tslm-fleet to run "
    "offline; these numbers are NOT comparable to published benchmark figures"
)


def quality_table(doc: dict[str, Any]) -> list[str]:
    """Variants as rows: ratio, choice acc / acc_norm (stderr), last-word acc and ppl."""

    def acc(scores: dict[str, Any], key: str) -> str:
        stderr = scores.get(f"{key}_stderr")
        tail = f" ± {sig(stderr, 2)}" if stderr is not None else ""
        return f"{sig(scores[key])}{tail}"

    rows = [
        [
            f"`{r['variant']}`",
            f"{sig(r['ratio'])}x",
            acc(r["choice"], "acc"),
            acc(r["choice"], "acc_norm"),
            acc(r["last_word"], "acc"),
            sig(r["last_word"]["word_perplexity"]),
        ]
        for r in doc.get("variants", [])
    ]
    n_choice = doc["variants"][0]["choice"]["items"] if rows else 0
    n_words = doc["variants"][0]["last_word"]["items"] if rows else 0
    return table(
        [
            "variant",
            "compression",
            f"choice acc ({n_choice:.0f} items)",
            "choice acc_norm",
            f"last-word acc ({n_words:.0f} items)",
            "last-word ppl",
        ],
        rows,
    )


def quality_section(doc: dict[str, Any]) -> Section:
    speed = doc["speed"]
    ours = speed["sides"]["tslm-fleet"]["items_per_s"]
    same = "identical" if speed["identical_decisions"] else "NOT identical"
    headline = (
        f"`choice` scores {sig(ours)} items/s with {doc['threads']} threads, "
        f"{sig(speed['ratio_vs_fastest_lm_eval'])}x lm-eval's own HF wrapper "
        f"({speed['fastest_lm_eval']}) on the same model and {speed['items']} items, "
        f"per-item decisions {same}"
    )
    rates = ", ".join(
        f"{name} {sig(side['items_per_s'])} items/s" for name, side in speed["sides"].items()
    )
    notes = [
        f"{headline}.",
        f"Median of {speed['rounds']} alternating rounds, tokenization included: {rates}.",
        f"{QUALITY_CAPTION}.",
    ]
    return Section(quality_table(doc), f"**Quality scoring speed**: {headline}.", notes)


#: result file stem -> renderer, in the order of the summary
RENDERERS: dict[str, Callable[[dict[str, Any]], Section]] = {
    "compress_speed": compress_section,
    "frontier": frontier_section,
    "inference": inference_section,
    "fleet": fleet_section,
    "db": db_section,
    "meters": meters_section,
    "truth": truth_section,
    "repeat": lambda doc: Section(*repeat_parts(doc)),
    "quality": quality_section,
    "loadonce": lambda doc: Section(*loadonce_parts(doc)),
    "scale": lambda doc: Section(*scale_parts(doc)),
}
TITLES = {
    "compress_speed": "Compression speed",
    "frontier": "Compression quality frontier",
    "inference": "Inference overhead (local device)",
    "fleet": "Fleet scaling",
    "db": "Results database",
    "meters": "Power-meter sampling",
    "truth": "Energy against ground truth",
    "repeat": "Repeatability of energy figures",
    "quality": "Task quality (smoke sets) and scoring speed",
    "loadonce": "One model load per device",
    "scale": "Scale: one controller, many devices",
}
