"""Turns ``bench/results/*.json`` into ``SUMMARY.md`` and the Results section of README.md.

The renderers of :mod:`bench.sections` give each result a short section with a table of
its headline figures and one line for the README. A result that is missing is listed as
"not run"; one whose last run failed or timed out says so (``harness.json`` records how
each run of ``python -m bench`` ended); a smoke run (``--quick``) is marked as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import describe_machine, machine_info, sig
from bench.sections import (
    QUALITY_CAPTION,
    RENDERERS,
    TITLES,
    Section,
    dense_perplexity,
    frontier_fields,
    frontier_rows,
    ppl_text,
    quality_table,
    table,
    truth_bounds_lines,
)
from tasks.errors import ConfigError, TslmError
from tasks.numbers import MISSING

START, END = "<!-- results:start -->", "<!-- results:end -->"
#: the measurement section's table of energy bounds (optional in a README)
BOUNDS_START, BOUNDS_END = "<!-- bounds:start -->", "<!-- bounds:end -->"
SUMMARY = "SUMMARY.md"
HARNESS = "harness.json"


# -- reading the results and writing the documents ------------------------------------------


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` in ``results_dir`` by stem; one that does not parse maps to an error."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            doc = {"unreadable": f"{path.name}: {exc}"}
        found[path.stem] = doc if isinstance(doc, dict) else {"unreadable": path.name}
    return found


def _status_line(stem: str, doc: dict[str, Any] | None, runs: dict[str, Any]) -> str | None:
    """What a reader must know before the figures: not run, failed, stale, smoke run."""
    run = runs.get(stem)
    if doc is None:
        if run and run.get("status") in ("failed", "timeout"):
            return f"Not run to completion: {_how_it_ended(run)}."
        return "Not run."
    notes = []
    if run and run.get("status") in ("failed", "timeout"):
        notes.append(
            f"the last run {_how_it_ended(run)}; the figures below are from an earlier run"
        )
    if doc.get("quick") or (run and run.get("quick")):
        notes.append("smoke run (--quick): reduced sizes, not for citation")
    if not notes:
        return None
    text = "; ".join(notes)
    return text[0].upper() + text[1:] + "."


def _how_it_ended(run: dict[str, Any]) -> str:
    if run["status"] == "timeout":
        return f"ran past its {sig(run.get('time_limit_s'))} s limit (log: {run.get('log')})"
    return f"failed with exit code {run.get('exit_code')} (log: {run.get('log')})"


def render(stem: str, doc: dict[str, Any]) -> Section | str:
    """The section of one result, or a one-line reason it cannot be shown."""
    if "unreadable" in doc:
        return f"unreadable result: {doc['unreadable']}."
    try:
        return RENDERERS[stem](doc)
    except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError) as exc:
        return f"{stem}.json does not have the expected fields ({type(exc).__name__}: {exc})."


def _when(doc: dict[str, Any] | None) -> str | None:
    machine = (doc or {}).get("machine")
    return machine.get("date") if isinstance(machine, dict) else None


def measured_on(doc: dict[str, Any] | None, run: dict[str, Any] | None) -> str:
    """When one result was measured: its own date, else when its harness run finished."""
    date = _when(doc) or (run or {}).get("finished")
    return str(date)[:10] if date else "on an unrecorded date"


def model_weights(doc: dict[str, Any]) -> str | None:
    """What the measured model's weights were: the GGUF's tensor types, de-quantised to fp32.

    Read from the result when it says; else from the embedded GGUF when the result's
    model sha256 is that file's (so the text describes the very file measured).
    """
    if doc.get("model_weights"):
        return str(doc["model_weights"])
    try:
        from tasks.hashing import sha256_file
        from tasks.models import embedded_gguf

        path = embedded_gguf()
        if doc.get("model_sha256") != sha256_file(path):
            return None
        return f"a {'/'.join(gguf_tensor_types(path))} GGUF, de-quantised to fp32"
    except (TslmError, OSError, ImportError, ValueError):
        return None


def gguf_tensor_types(path: Path) -> list[str]:
    """The weight types of a GGUF's tensors (e.g. ``Q4_1``, ``Q8_0``), most parameters first."""
    from collections import Counter

    from gguf import GGUFReader

    counts: Counter[str] = Counter()
    for tensor in GGUFReader(path).tensors:
        counts[tensor.tensor_type.name] += int(tensor.n_elements)
    return [name for name, _ in counts.most_common() if name not in ("F32", "F16")] or ["F32"]


def _header_machine(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The machine of the last harness run; else this machine, dated by the newest result."""
    harness = results.get(HARNESS.removesuffix(".json"), {})
    machine = harness.get("machine")
    if isinstance(machine, dict):
        return machine
    dates = [d for d in (_when(doc) for doc in results.values()) if d]
    return {**machine_info(), "date": max(dates) if dates else "unknown"}


def _runs(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    harness = results.get(HARNESS.removesuffix(".json"), {})
    return {r.get("result"): r for r in harness.get("runs", []) if isinstance(r, dict)}


def summary_markdown(results_dir: Path) -> str:
    """The whole SUMMARY.md text for the results in ``results_dir``."""
    results = load_results(results_dir)
    machine, runs = _header_machine(results), _runs(results)
    out = [
        "# Benchmark results",
        "",
        f"Machine: {describe_machine(machine)}.",
        f"Date: {machine.get('date', 'unknown')}.",
        "",
        "Each benchmark runs in its own process, one after another, on this machine "
        "alone; `make bench` regenerates this file.",
        "",
    ]
    known = [s for s in RENDERERS]
    extra = sorted(s for s in results if s not in RENDERERS and s != "harness")
    for stem in known + extra:
        doc = results.get(stem)
        out += [f"## {TITLES.get(stem, stem)}", ""]
        status = _status_line(stem, doc, runs)
        if status:
            out += [f"_{status}_", ""]
        if doc is None:
            continue
        if stem not in RENDERERS:
            out += [f"Raw result: [{stem}.json]({stem}.json) (no summary renderer).", ""]
            continue
        section = render(stem, doc)
        if isinstance(section, str):
            out += [section, ""]
            continue
        if _when(doc):
            out += [f"Measured {_when(doc)}.", ""]
        out += [*section.notes, ""]
        if section.lines:
            out += [*section.lines, ""]
        out += [f"Raw: [{stem}.json]({stem}.json)", ""]
    pngs = sorted(p.name for p in results_dir.glob("*.png"))
    if pngs:
        out += ["## Figures", ""] + [f"- [{name}]({name})" for name in pngs] + [""]
    return "\n".join(out).rstrip() + "\n"


def write_summary(results_dir: Path) -> Path:
    """Write ``results_dir/SUMMARY.md`` and return its path."""
    path = results_dir / SUMMARY
    results_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(summary_markdown(results_dir))
    return path


def canonical(variant: str) -> str:
    """The canonical spelling of a variant spec (so ``tt:ratio=2.0`` meets ``tt:ratio=2``)."""
    from tasks.compression import parse_variant

    try:
        return parse_variant(variant).canonical
    except TslmError:
        return variant


def paper_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """Variants as rows: compression ratio, perplexity, reconstruction error, latency."""
    inference = results.get("inference") or {}
    latency: dict[str, str] = {}
    modes = inference.get("modes") if isinstance(inference.get("modes"), dict) else {}
    if modes.get("dense"):
        latency[canonical("dense")] = f"{sig(modes['dense']['latency_s']['median'])} s"
    tt = modes.get("tt-on-the-fly")
    if tt and inference.get("variant"):
        latency[canonical(inference["variant"])] = (
            f"{sig(tt['latency_s']['median'])} s ({sig(tt['latency_ratio_vs_dense']['median'])}x)"
        )
    frontier = results.get("frontier") or {}
    rows = [frontier_fields(r) for r in frontier_rows(frontier)]
    dense = dense_perplexity(frontier)
    if not rows and inference.get("variant"):
        art = inference.get("artifact", {})
        rows = [
            {
                "variant": "dense",
                "ratio": 1.0,
                "ratio_source": None,
                "error": 0.0,
                "ppl_input": None,
                "ppl_tied": None,
            },
            {
                "variant": inference["variant"],
                "ratio": art.get("compression_ratio"),
                "ratio_source": art.get("compression_ratio_source"),
                "error": art.get("reconstruction_error"),
                "ppl_input": None,
                "ppl_tied": None,
            },
        ]
    if not rows:
        return []
    return table(
        [
            "variant",
            "compression",
            "vs source",
            "ppl (input only)",
            "ppl (tied head)",
            "rel. reconstruction error",
            "generate latency",
        ],
        [
            [
                f"`{f['variant']}`",
                f"{sig(f['ratio'])}x" if f["ratio"] else MISSING,
                f"{sig(f['ratio_source'])}x" if f.get("ratio_source") else MISSING,
                ppl_text(f["ppl_input"], dense, str(f["variant"])),
                ppl_text(f["ppl_tied"], dense, str(f["variant"])),
                sig(f["error"]),
                latency.get(canonical(str(f["variant"])), ""),
            ]
            for f in rows
        ],
    )


def readme_section(results_dir: Path) -> str:
    """The compact Results section (between the markers) for README.md."""
    results = load_results(results_dir)
    machine, runs = _header_machine(results), _runs(results)
    out = [
        f"Measured by `make bench` on {describe_machine(machine)}, "
        f"{machine.get('date', 'date unknown')}. Full tables: "
        "[bench/results/SUMMARY.md](bench/results/SUMMARY.md).",
        "",
    ]
    paper = paper_table(results)
    if paper:
        inference = results.get("inference") or {}
        weights = model_weights(results.get("frontier") or inference)
        when = measured_on(results.get("frontier"), runs.get("frontier"))
        out += [
            f"SmolLM2-135M-Instruct{f' ({weights})' if weights else ''} on this machine, "
            f"measured {when} (latency: `generate`, "
            f"{inference.get('queries', '?')} queries x "
            f"{inference.get('max_new_tokens', '?')} new tokens, median; TT on the fly "
            "vs dense):",
            "",
            *paper,
            "",
        ]
    quality = results.get("quality")
    if quality and quality.get("variants"):
        out += [
            f"{QUALITY_CAPTION} (`choice` and `last-word` on {quality.get('model', '?')}; "
            "± one standard error):",
            "",
            *quality_table(quality),
            "",
        ]
    scale = results.get("scale")
    if scale and scale.get("curve"):
        from bench.sections_scale import scale_headline, scale_table

        out += [
            f"One controller, many devices ({scale_headline(scale)}; {scale['caveats']}):",
            "",
            *scale_table(scale),
            "",
        ]
    repeat = results.get("repeat")
    if repeat and repeat.get("families"):
        from bench.sections_repeat import headline, repeat_table

        when = measured_on(repeat, runs.get("repeat"))
        quick = (
            " Smoke run (--quick): three trials, not for citation." if repeat.get("quick") else ""
        )
        out += [
            f"Repeatability of energy figures ({headline(repeat)}; measured {when} on "
            f"emulated load-following meters on this shared machine).{quick}",
            "",
            *repeat_table(repeat),
            "",
        ]
    if (results_dir / "frontier.png").is_file():
        out += ["![perplexity vs compression ratio](bench/results/frontier.png)", ""]
    for stem in RENDERERS:
        doc = results.get(stem)
        status = _status_line(stem, doc, runs)
        if doc is None:
            out.append(f"- **{TITLES[stem]}**: {status}")
            continue
        section = render(stem, doc)
        line = section.readme_line if isinstance(section, Section) else section
        when = measured_on(doc, runs.get(stem))
        out.append(f"- {line} _Measured {when}._" + (f" _{status}_" if status else ""))
    return "\n".join(out).rstrip()


def update_readme(readme: Path, results_dir: Path) -> None:
    """Replace the text between the results markers of ``readme``; nothing else changes."""
    text = readme.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ConfigError(
            f"{readme}: no '{START}' ... '{END}' markers",
            hint="put both markers, in that order, where the results belong",
        )
    body = readme_section(results_dir)
    text = text[: start + len(START)] + "\n" + body + "\n" + text[end:]
    start, end = text.find(BOUNDS_START), text.find(BOUNDS_END)
    truth = load_results(results_dir).get("truth")
    if 0 <= start < end and truth and truth.get("families"):
        bounds = "\n".join(truth_bounds_lines(truth))
        text = text[: start + len(BOUNDS_START)] + "\n" + bounds + "\n" + text[end:]
    readme.write_text(text)
