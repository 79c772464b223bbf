"""The accuracy figure: accuracy against compression ratio, per task and method."""

from __future__ import annotations

from pathlib import Path

from orchestrator.plot_quality import accuracy_points, plot_accuracy, write_accuracy_plot
from tests.orchestrator.test_plots import assert_png, figure_texts, result_rows

ACCURACY = {"dense": (0.625, 0.08), "tt-1.5x": (0.55, 0.079), "tt-2x": (0.45, 0.078)}


def quality_rows() -> list[dict]:
    """The plot fixture's rows plus a choice trial per variant on the controller."""
    rows = result_rows()
    for row in [r for r in rows if r["device"] == "pi4" and r["task"] == "generate"]:
        acc, stderr = ACCURACY[row["variant"]]
        rows.append(
            {
                **row,
                "device": "controller",
                "task": "choice",
                "scores": {"acc": acc, "acc_stderr": stderr, "acc_norm": acc + 0.05},
            }
        )
    return rows


def test_accuracy_points_per_task_and_method() -> None:
    lines, notes = accuracy_points(quality_rows())
    assert notes == []
    assert lines[("choice", "tt")] == [
        (1.48, 0.55, 0.079, "tt-1.5x"),
        (1.99, 0.45, 0.078, "tt-2x"),
    ]
    assert lines[("choice", "dense")] == [(1.0, 0.625, 0.08, "dense")]


def test_accuracy_figure_has_a_dense_reference_and_error_bars(tmp_path: Path) -> None:
    fig = plot_accuracy(quality_rows())
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 1.0)
    assert "accuracy" in ax.get_ylabel() and "compression ratio" in ax.get_xlabel()
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "choice · tt"]
    assert list(line.get_xdata()) == [1.48, 1.99] and list(line.get_ydata()) == [0.55, 0.45]
    assert "choice dense: 0.625" in figure_texts(fig)
    assert_png(write_accuracy_plot(quality_rows(), tmp_path))


def test_accuracy_figure_without_accuracy_says_so() -> None:
    assert "no accuracy results" in figure_texts(plot_accuracy(result_rows()))
