"""The accuracy figure of ``tslm-fleet plot``: task accuracy against compression ratio.

One line per (task, method) with every variant annotated, the dense model as a dotted
reference line per task, error bars of one standard error where the task reported it
(``acc_stderr``). Accuracy does not depend on the device: where several devices (or the
``controller``) report one, the median is shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

from orchestrator.plots import (
    DENSE_METHOD,
    NOTE_FONT_SIZE,
    _add_notes,
    _empty_panel,
    _new_figure,
    _runs_label,
    _save,
    as_result_row,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_NAME = "accuracy_vs_compression"


def _scores(row: Any) -> Mapping[str, float]:
    scores = row.get("scores") if isinstance(row, Mapping) else getattr(row, "scores", None)
    return scores if isinstance(scores, Mapping) else {}


def accuracy_points(rows: Iterable[Any]) -> tuple[dict[tuple, list[tuple]], list[str]]:
    """(task, method) -> [(ratio, acc, stderr, variant)] medians over devices; notes."""
    values: dict[tuple[str, str, str], list[tuple[float, float | None]]] = {}
    ratios: dict[tuple[str, str, str], float] = {}
    notes = []
    for raw in rows:
        scores = _scores(raw)
        if "acc" not in scores:
            continue
        row = as_result_row(raw)
        if row.ratio is None:
            notes.append(f"{row.variant} {row.task} (no compression ratio)")
            continue
        key = (row.task, row.method or row.variant, row.variant)
        values.setdefault(key, []).append((float(scores["acc"]), scores.get("acc_stderr")))
        ratios[key] = row.ratio
    lines: dict[tuple, list[tuple]] = {}
    for (task, method, variant), found in values.items():
        acc = median(a for a, _ in found)
        errs = [e for _, e in found if e is not None]
        stderr = median(errs) if errs else None
        lines.setdefault((task, method), []).append(
            (ratios[(task, method, variant)], acc, stderr, variant)
        )
    return {k: sorted(v) for k, v in sorted(lines.items())}, sorted(set(notes))


def plot_accuracy(rows: Iterable[Any]) -> Figure:
    """Accuracy (0..1) against compression ratio, a line per task and method."""
    rows = list(rows)
    label_rows = [as_result_row(r) for r in rows]
    fig, axes = _new_figure(1, f"Accuracy vs compression ratio — {_runs_label(label_rows)}")
    ax = axes[0]
    lines, notes = accuracy_points(rows)
    if not lines:
        _empty_panel(ax, "no accuracy results\n(run the choice or last-word task)")
        _add_notes(fig, notes)
        return fig
    for (task, method), points in lines.items():
        if method == DENSE_METHOD:
            for _, acc, _, variant in points:
                ax.axhline(acc, linestyle=":", color="gray")
                ax.annotate(
                    f"{task} {variant}: {acc:.3g}",
                    (0.01, acc),
                    xycoords=("axes fraction", "data"),
                    xytext=(0, 3),
                    textcoords="offset points",
                    fontsize=NOTE_FONT_SIZE,
                    color="gray",
                )
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        line = ax.plot(xs, ys, marker="o", label=f"{task} · {method}")[0]
        errors = [p[2] or 0.0 for p in points]
        if any(errors):
            ax.errorbar(xs, ys, yerr=errors, fmt="none", ecolor=line.get_color(), capsize=3)
        for x, y, _, variant in points:
            ax.annotate(
                variant,
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=NOTE_FONT_SIZE,
                color=line.get_color(),
            )
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("embedding compression ratio (×)")
    ax.set_ylabel("accuracy (higher is better; ± one standard error)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", title="task · method")
    _add_notes(fig, notes)
    return fig


def write_accuracy_plot(rows: Iterable[Any], out_dir: Path) -> Path:
    """Write ``out_dir/accuracy_vs_compression.png`` (the folder must exist)."""
    return _save(plot_accuracy(rows), Path(out_dir) / f"{FIGURE_NAME}.png")
