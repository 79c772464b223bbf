"""Renderers of the scale results: load-once wall time and the 1..64-device curve.

Each ``*_parts`` function returns ``(table lines, README line, notes)``, which
:mod:`bench.sections` turns into its ``Section``.
"""

from __future__ import annotations

from typing import Any

from bench.common import sig
from tasks.numbers import MISSING

Parts = tuple[list[str], str, list[str]]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def with_iqr(s: dict[str, float] | None) -> str:
    if not s:
        return MISSING
    if s.get("n", 1) < 2:
        return sig(s["median"])
    return f"{sig(s['median'])} (IQR {sig(s['iqr'], 2)})"


def loadonce_parts(doc: dict[str, Any]) -> Parts:
    exp = doc["experiment"]
    wall = doc["wall_s"]
    same = "identical" if doc.get("identical_outputs") else "DIFFERENT"
    headline = (
        f"the {'quick' if doc.get('quick') else 'default'} experiment ({exp['trials']} trials on "
        f"the local device, warm cache) takes {sig(wall['after']['median'])} s with one model "
        f"load per device against {sig(wall['before']['median'])} s with one per trial: "
        f"{sig(doc['speedup'])}x faster, outputs and scores {same}"
    )
    loads = doc.get("load_window_s", {})
    rows = [
        [
            side,
            with_iqr(wall[side]),
            str(loads.get(side, {}).get("n", MISSING)),
            sig(loads.get(side, {}).get("median")),
        ]
        for side in ("before", "after")
    ]
    lines = table(["side", "wall s", "load windows", "median load window s"], rows)
    notes = [
        f"{headline}.",
        f"{doc['pairs']} alternating pair(s) after an untimed priming run; {doc['caveats']}.",
    ]
    return lines, f"**One model load per device**: {headline}.", notes


def scale_table(doc: dict[str, Any]) -> list[str]:
    """The curve: one row per fleet size."""
    rows = []
    for c in doc.get("curve", []):
        if c.get("failed"):
            rows.append([str(c["devices"]), "failed", "", "", "", "", "", ""])
            continue
        behind = ", ".join(c.get("fell_behind", []) + c.get("never_measured", [])) or "none"
        rows.append(
            [
                str(c["devices"]),
                sig(c["wall_s"]),
                sig(c["controller_cpu_s"]),
                sig(c["controller_peak_rss_mib"]),
                str(c["peak_ssh_connections"]),
                sig(c.get("all_measuring_s")),
                f"{sig(c['dashboard_refresh_ms'])} ms",
                behind,
            ]
        )
    return table(
        [
            "devices",
            "wall s",
            "controller CPU s",
            "peak RSS MiB",
            "SSH connections",
            "all measuring after s",
            "dashboard render",
            "fell behind",
        ],
        rows,
    )


def scale_headline(doc: dict[str, Any]) -> str:
    fit = doc.get("fit") or {}
    largest = max((c["devices"] for c in doc.get("curve", [])), default=0)
    if not fit:
        return f"up to {largest} devices, too few sizes for a fit"
    return (
        f"up to {largest} light devices (`idle` task, {len(doc['variants'])} trials each): "
        f"controller CPU {sig(fit['cpu_s_per_device_per_trial'])} s per device per trial "
        f"(goal <= 0.05), memory {sig(fit['rss_mib_per_device'])} MiB per device (goal <= 15) "
        f"over {sig(fit['rss_fixed_mib'])} MiB fixed"
    )


def scale_parts(doc: dict[str, Any]) -> Parts:
    if doc.get("skipped"):
        return [], f"**Scale**: skipped ({doc['skipped']}).", [f"Skipped: {doc['skipped']}."]
    headline = scale_headline(doc)
    notes = [
        f"{headline}.",
        "CPU and memory per device are least-squares slopes over the fleet sizes; "
        f"{doc['caveats']}.",
    ]
    return scale_table(doc), f"**Scale**: {headline}.", notes
