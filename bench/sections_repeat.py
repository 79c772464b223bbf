"""The renderer of ``bench/results/repeat.json`` (``bench/bench_repeat.py``): the
repeatability table, its notes and its README line, and an example provenance record."""

from __future__ import annotations

import json
from typing import Any

from bench.common import sig
from tasks.numbers import MISSING


def _pct(value: float | None) -> str:
    if value is None:
        return MISSING
    if abs(value) < 1e-4:
        return "< 0.01 %"
    return f"{sig(100 * value, 2)} %"


def _signed(value: float | None) -> str:
    text = _pct(value)
    return text if value is None or value < 0 or text.startswith("<") else f"+{text}"


def _phase(p: dict[str, Any]) -> str:
    error = p["energy_error"]
    resolved = f"{p['windows_resolved']}/{p['windows']} windows resolved"
    if not error["n"]:
        return f"{MISSING} ({resolved})"
    return f"{_signed(p['mean_error'])}, worst {_pct(error['worst'])} ({resolved})"


def goal_met(f: dict[str, Any], goal: dict[str, float]) -> bool | None:
    """Whether a family meets the goal; None when one trial gives no CV to judge."""
    cv = f["energy_j_per_query"]["cv"]
    if cv is None or f["bias"]["mean"] is None:
        return None
    return cv <= goal["cv"] and abs(f["bias"]["mean"]) <= goal["bias"]


def repeat_table(doc: dict[str, Any]) -> list[str]:
    """One row per meter family: CV, bias and per-phase error."""
    header = [
        "meter",
        "trials",
        "J/query (1 s queries)",
        "CV reported (true)",
        "CV reported/true",
        "bias mean (worst)",
        "prefill energy error",
        "decode energy error",
        "goal met",
    ]
    rows = []
    for f in doc["families"]:
        reported, true = f["energy_j_per_query"], f["true_energy_j_per_query"]
        rows.append(
            [
                f["family"],
                str(f["trials"]),
                sig(reported["mean"]),
                f"{_pct(reported['cv'])} ({_pct(true['cv'])})",
                _pct((f.get("ratio_to_true") or {}).get("cv")),
                f"{_signed(f['bias']['mean'])} ({_pct(f['bias']['worst'])})",
                _phase(f["phases"]["prefill"]),
                _phase(f["phases"]["decode"]),
                {True: "yes", False: "no"}.get(goal_met(f, doc["goal"]), MISSING),
            ]
        )
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def headline(doc: dict[str, Any]) -> str:
    goal = doc["goal"]
    parts = [
        f"{f['family']} CV {_pct(f['energy_j_per_query']['cv'])}, bias {_signed(f['bias']['mean'])}"
        for f in doc["families"]
    ]
    missed = [f["family"] for f in doc["families"] if goal_met(f, goal) is False]
    unjudged = [f["family"] for f in doc["families"] if goal_met(f, goal) is None]
    verdict = (
        f"too few trials to judge the goal on {', '.join(unjudged)}"
        if unjudged and not missed
        else "goal met on every family"
        if not missed
        else f"goal (CV <= {_pct(goal['cv'])}, |bias| <= {_pct(goal['bias'])}) "
        f"not met on {', '.join(missed)}"
    )
    # where the reported energy only follows the true one: the machine, not the meter
    by_load = [
        f"{f['family']} {_pct(f['ratio_to_true']['cv'])}"
        for f in doc["families"]
        if goal_met(f, goal) is False
        and (f.get("ratio_to_true") or {}).get("cv") is not None
        and f["ratio_to_true"]["cv"] <= goal["cv"]
        and f["energy_j_per_query"]["cv"] > goal["cv"]
    ]
    if by_load:
        verdict += (
            "; the CV there is the true energy's (the shared machine's load): reported / "
            f"true varies by {', '.join(by_load)}"
        )
    trials = doc["families"][0]["trials"]
    return f"{'; '.join(parts)} over {trials} trial{'s' * (trials != 1)} each; {verdict}"


def repeat_parts(doc: dict[str, Any]) -> tuple[list[str], str, list[str]]:
    """(SUMMARY table, README line, notes) of the repeatability benchmark."""
    example = next(
        (f["provenance_example"] for f in doc["families"] if f.get("provenance_example")), None
    )
    notes = [
        "Same trial repeated on each load-following meter: CV of the reported energy per "
        "query across trials (the CV of the true energy beside it: the shared machine's "
        "other work changes what the CPU does); bias of each trial's energy per query "
        "against the true trace; prefill and decode energy summed over the windows "
        "against the true energy of the queries' own phase intervals.",
        f"Load-following meters: {sig(doc['idle_w'])} W idle + {sig(doc['busy_w_per_core'])} W "
        f"per busy core; load average {sig(doc['load_average_1min'])} while measured.",
        *[f"Caveat: {c}." for c in doc.get("caveats", [])],
    ]
    if example:
        notes.append(f"Example provenance record: `{json.dumps(example, sort_keys=True)}`.")
    return repeat_table(doc), f"**Repeatability**: {headline(doc)}.", notes
