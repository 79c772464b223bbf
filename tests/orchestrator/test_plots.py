"""Figures of a run's results: the row adapter, the three PNGs, notes for missing data,
clear errors, and ``tslm-fleet plot`` on a real SQLite results database."""

from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from db.errors import DatabaseError
from orchestrator.plots import (
    FIGURES,
    as_result_row,
    plot_energy,
    plot_latency,
    plot_perplexity,
    write_plots,
)
from tasks.errors import ConfigError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VARIANTS = (
    ("dense", "dense", None, 6.75),
    ("tt-1.5x", "tt", 1.48, 14.6),
    ("tt-2x", "tt", 1.99, 9.23),
)


def result_rows(
    *, metered: tuple[str, ...] = ("pi4", "pi5"), devices: tuple[str, ...] = ("pi4", "pi5", "local")
) -> list[dict[str, Any]]:
    """Rows shaped like ``db.results.results``: 3 variants x 2 tasks per device."""
    rows = []
    for k, device in enumerate(devices):
        speed = 1.0 / (k + 1)
        for variant, method, ratio, ppl in VARIANTS:
            for task in ("generate", "perplexity"):
                energy = 3.0 * speed / (ratio or 1.0) ** 0.2 if device in metered else None
                rows.append(
                    {
                        "run_id": "run-1",
                        "device": device,
                        "model": "smollm2",
                        "variant": variant,
                        "method": method,
                        "compression_ratio": ratio,
                        "task": task,
                        "n_queries": 24,
                        "latency_s_median": 0.8 * speed,
                        "latency_s_p90": 0.95 * speed,
                        "latency_s_ci_low": 0.75 * speed,
                        "latency_s_ci_high": 0.84 * speed,
                        "energy_j_per_query_median": energy,
                        "net_energy_j_per_query_median": None if energy is None else energy * 0.4,
                        "energy_j_per_query_iqr": None if energy is None else energy * 0.2,
                        "perplexity": ppl if task == "perplexity" else None,
                    }
                )
    return rows


def assert_png(path: Path, min_bytes: int = 10_000) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) >= min_bytes, (path, len(data))
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 400 and height >= 300
    return width, height


def figure_texts(fig: Any) -> str:
    texts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        texts += [t.get_text() for t in ax.texts] + [
            ax.get_title(),
            ax.get_xlabel(),
            ax.get_ylabel(),
        ]
    return "\n".join(texts)


# --------------------------------------------------------------------------- adapter


def test_adapter_reads_mappings_and_objects_alike() -> None:
    row = result_rows()[0]
    from_dict = as_result_row(row)
    from_object = as_result_row(SimpleNamespace(**row))
    assert from_dict == from_object
    assert from_dict.device == "pi4" and from_dict.variant == "dense"
    assert from_dict.ratio == 1.0  # dense without a stored ratio is the 1x baseline
    assert from_dict.latency_s_low == 0.75 and from_dict.latency_s_high == 0.84
    # no CI for energy: the interquartile range around the median
    assert from_dict.energy_j_per_query_low == pytest.approx(3.0 - 0.3)
    assert from_dict.energy_j_per_query_high == pytest.approx(3.0 + 0.3)


def test_adapter_prefers_the_confidence_interval_and_tolerates_gaps() -> None:
    row = {
        **result_rows()[2],
        "energy_j_per_query_ci_low": 2.5,
        "energy_j_per_query_ci_high": 3.1,
        "model": None,
        "method": None,
        "perplexity": float("nan"),
        "n_queries": None,
    }
    adapted = as_result_row(row)
    assert (adapted.energy_j_per_query_low, adapted.energy_j_per_query_high) == (2.5, 3.1)
    assert adapted.model == "unknown model" and adapted.method == ""
    assert adapted.perplexity is None and adapted.n_queries == 0
    assert adapted.ratio == 1.48


def test_adapter_rejects_rows_without_identity() -> None:
    row = result_rows()[0]
    del row["device"]
    with pytest.raises(DatabaseError, match="lacks device"):
        as_result_row(row)


# --------------------------------------------------------------------------- figures


def test_write_plots_writes_every_figure_as_a_png(tmp_path: Path) -> None:
    out = tmp_path / "figures" / "run-1"
    paths = write_plots(result_rows(), out)
    assert [p.name for p in paths] == [f"{name}.png" for name in FIGURES]
    for path in paths:
        assert path.parent == out
        assert_png(path)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)


def test_energy_figure_notes_devices_without_a_meter() -> None:
    rows = [as_result_row(r) for r in result_rows()]
    fig = plot_energy(rows)
    text = figure_texts(fig)
    assert "local: no energy measured for any trial (no power meter?)" in text
    assert "energy per query (J)" in text and "compression ratio" in text
    generate = fig.axes[0]
    labels = [t.get_text() for t in generate.get_legend().get_texts()]
    assert labels == ["pi4", "pi5", "pi4 (net of idle)", "pi5 (net of idle)"]


def test_energy_figure_without_any_meter_still_renders(tmp_path: Path) -> None:
    rows = result_rows(metered=())
    text = figure_texts(plot_energy([as_result_row(r) for r in rows]))
    assert "no energy measurements" in text
    for path in write_plots(rows, tmp_path):
        assert_png(path, min_bytes=5_000)


def test_latency_figure_has_a_bar_per_device_and_variant() -> None:
    rows = [as_result_row(r) for r in result_rows()]
    fig = plot_latency(rows)
    generate = fig.axes[0]
    assert generate.get_title() == "generate"
    assert generate.get_ylabel() == "latency per query (ms)"
    assert len(generate.patches) == 3 * 3  # devices x variants
    heights = sorted({round(p.get_height(), 6) for p in generate.patches})
    assert heights == pytest.approx([800 / 3, 400, 800])
    assert [t.get_text() for t in generate.get_xticklabels()] == ["local", "pi4", "pi5"]


def test_latency_switches_to_seconds_for_slow_queries() -> None:
    rows = [
        as_result_row({**r, "latency_s_median": 2.5, "latency_s_p90": 3.0}) for r in result_rows()
    ]
    assert plot_latency(rows).axes[0].get_ylabel() == "latency per query (s)"


def test_perplexity_figure_is_log_scaled_with_a_dense_reference() -> None:
    rows = [as_result_row(r) for r in result_rows()]
    fig = plot_perplexity(rows)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert "perplexity" in ax.get_ylabel() and "compression ratio" in ax.get_xlabel()
    tt_line = next(line for line in ax.get_lines() if line.get_label() == "tt")
    assert list(tt_line.get_xdata()) == [1.48, 1.99]
    assert list(tt_line.get_ydata()) == [14.6, 9.23]
    assert "dense: 6.75" in figure_texts(fig)


def test_perplexity_figure_without_scores_says_so() -> None:
    rows = [as_result_row({**r, "perplexity": None}) for r in result_rows()]
    assert "no perplexity results" in figure_texts(plot_perplexity(rows))


# --------------------------------------------------------------------------- errors


def test_no_rows_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no results for run run-9") as info:
        write_plots([], tmp_path / "out", run_id="run-9")
    assert info.value.hint
    assert not (tmp_path / "out").exists()


def test_output_path_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "figures"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create the output directory"):
        write_plots(result_rows(), blocker)


# --------------------------------------------------------------------------- command


def populated_store(url: str) -> None:
    """One run, two devices (one without a meter), dense and TT, through the real store."""
    from db.store import open_store
    from tests.db.factories import trial_events

    with open_store(url) as store:
        store.create_run("run-a", {"devices": ["pi5", "local"]}, "inventory.yaml", model="smollm2")
        store.finish_run("run-a", "ok")
        store.create_run("run-b", {"devices": ["pi5", "local"]}, "inventory.yaml", model="smollm2")
        dense = store.register_artifact({"model": "smollm2", "method": "dense"})
        tt = store.register_artifact(
            {"model": "smollm2", "method": "tt", "compression_ratio": 1.99, "params": {"rank": 4}}
        )
        for device, meter in (("pi5", "pi5-pmic"), ("local", None)):
            store.upsert_device(device, meter_kind=meter)
            for seed, (variant, artifact, latency) in enumerate(
                (("dense", dense, 0.30), ("tt-2x", tt, 0.28))
            ):
                trial = store.create_trial("run-b", device, variant, "generate", artifact)
                store.ingest_events(
                    trial, trial_events(meter_kind=meter, latency_s=latency, seed=seed)
                )
                store.set_trial_status(trial, "ok")
        store.finish_run("run-b", "ok")


def test_plot_command_writes_figures_of_the_latest_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import build_app

    url = f"sqlite:///{tmp_path / 'results.db'}"
    populated_store(url)
    out = tmp_path / "figures"
    result = CliRunner().invoke(build_app(), ["plot", "--db", url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = [Path(line) for line in result.output.split()]
    figures = [*FIGURES, "accuracy_vs_compression"]
    assert [p.name for p in written] == [f"{name}.png" for name in figures]
    for path in written:
        assert_png(path)


def test_plot_command_names_a_run_without_results(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import build_app

    url = f"sqlite:///{tmp_path / 'results.db'}"
    populated_store(url)
    result = CliRunner().invoke(
        build_app(), ["plot", "--db", url, "--run", "run-a", "--out", str(tmp_path / "out")]
    )
    assert isinstance(result.exception, ConfigError)
    assert "no results for run run-a" in str(result.exception)


def test_phase_energy_figure_has_a_panel_per_phase_and_notes_unresolved_ones() -> None:
    from orchestrator.plots import plot_phase_energy

    raw = result_rows()
    for row in raw:
        if row["task"] == "generate" and row["energy_j_per_query_median"] is not None:
            row["energy_j_per_decode_token_median"] = row["energy_j_per_query_median"] / 32
            # prefill is resolved on pi5 only
            if row["device"] == "pi5":
                row["energy_j_per_prefill_token_median"] = row["energy_j_per_query_median"] / 200
    fig = plot_phase_energy([as_result_row(r) for r in raw])
    prefill, decode = fig.axes[:2]
    assert [t.get_text() for t in decode.get_legend().get_texts()] == ["pi4", "pi5"]
    assert [t.get_text() for t in prefill.get_legend().get_texts()] == ["pi5"]
    text = figure_texts(fig)
    assert "energy per output token (J)" in text and "energy per prompt token (J)" in text
    assert "pi4 dense prefill (under-resolved)" in text
