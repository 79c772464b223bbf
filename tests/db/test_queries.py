"""Aggregated results, the comparison table, runs, and read-only SQL."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

import pytest

from db.errors import DatabaseError, ReadOnlyError
from db.results import ResultFilter
from db.store import Store, open_store
from tests.db.conftest import make_trial
from tests.db.factories import trial_events

REQUIRED_KEYS = {
    "run_id",
    "device",
    "model",
    "variant",
    "method",
    "compression_ratio",
    "task",
    "n_queries",
    "latency_s_median",
    "latency_s_p90",
    "ttft_s_median",
    "tokens_per_s_median",
    "decode_s_per_token",
    "peak_rss_bytes",
    "peak_rss_scope",
    "energy_j_per_query_median",
    "net_energy_j_per_query_median",
    "idle_power_w",
    "mean_power_w",
    "perplexity",
    "meter",
    "flags",
    "status",
}


def fill(store: Store) -> dict[tuple[str, str], list[dict]]:
    """Two devices x two variants of one run; returns the events per (device, variant)."""
    streams = {}
    for device, meter, period in (("pi4", "um25c", 0.5), ("pi5", "pi5-pmic", 0.1)):
        for variant, method, ratio, ppl in (
            ("dense", "dense", None, 6.75),
            ("tt-r8", "tt", 0.89, 6.98),
        ):
            trial = make_trial(
                store, device=device, variant=variant, method=method, ratio=ratio, meter_kind=meter
            )
            events = trial_events(
                meter_kind=meter,
                meter_period_s=period,
                perplexity=ppl,
                latency_s=0.3 if variant == "dense" else 0.27,
                seed=trial,
            )
            store.ingest_events(trial, events)
            streams[(device, variant)] = events
    return streams


def test_results_aggregate_each_trial(store: Store) -> None:
    streams = fill(store)
    rows = store.results()
    assert len(rows) == 4
    for row in rows:
        assert row.to_dict().keys() >= REQUIRED_KEYS
        events = streams[(row.device, row.variant)]
        queries = [e for e in events if e["type"] == "query"]
        windows = [e for e in events if e["type"] == "window" and e["kind"] == "queries"]
        assert row.n_queries == len(queries)
        assert row.latency_s_median == pytest.approx(
            statistics.median(q["latency_s"] for q in queries)
        )
        assert row.latency_s_ci_low <= row.latency_s_median <= row.latency_s_ci_high
        assert row.energy_source == "windows" and "energy-from-windows" in row.flags
        assert row.energy_j_per_query_median == pytest.approx(
            statistics.median(w["energy_j_per_query"] for w in windows)
        )
        assert row.idle_power_w == pytest.approx(3.2)
        assert row.status == "ok" and row.model == "smollm2-135m"
    by_key = {(r.device, r.variant): r for r in rows}
    assert by_key[("pi5", "dense")].compression_ratio == 1.0
    assert by_key[("pi5", "tt-r8")].perplexity == pytest.approx(6.98)
    # the UM25C's two readings a second cannot resolve 4 x 0.3 s windows
    assert "under-resolved" in by_key[("pi4", "dense")].flags
    assert "under-resolved" not in by_key[("pi5", "dense")].flags


def test_flags_for_no_meter_throttling_and_failure(store: Store) -> None:
    trial = make_trial(store, device="pc", meter_kind="none")
    store.ingest_events(trial, trial_events(meter_kind=None, throttled=True, status="failed"))
    (row,) = store.results(ResultFilter(device="pc"))
    assert {"no-meter", "throttled", "failed"} <= set(row.flags)
    assert row.energy_j_per_query_median is None and row.mean_power_w is None
    assert row.latency_s_median is not None


def test_energy_falls_back_to_per_query_figures(store: Store) -> None:
    trial = make_trial(store)
    events = [e for e in trial_events() if not (e["type"] == "window" and e["kind"] == "queries")]
    store.ingest_events(trial, events)
    (row,) = store.results()
    assert row.energy_source == "queries" and "energy-from-queries" in row.flags
    energies = [e["energy_j"] for e in events if e["type"] == "query"]
    assert row.energy_j_per_query_median == pytest.approx(statistics.median(energies))


def test_result_filters(store: Store) -> None:
    fill(store)
    assert {r.device for r in store.results(ResultFilter(device="pi4"))} == {"pi4"}
    assert len(store.results(ResultFilter(variant="tt-r8", device="pi5"))) == 1
    assert store.results(ResultFilter(run_id="other")) == []
    assert len(store.results(ResultFilter(model="smollm2-135m"))) == 4
    future = datetime.now(UTC) + timedelta(days=1)
    assert store.results(ResultFilter(since=future)) == []
    assert len(store.results(ResultFilter(since=future - timedelta(days=2)))) == 4


def test_compare_layouts(store: Store) -> None:
    fill(store)
    table = store.compare()
    assert table.run_id == "run-1" and table.groups == ["pi4", "pi5"]
    assert [r.key for r in table.rows] == ["tt-r8", "dense"]  # ordered by ratio
    cell = table.rows[1].cells["pi5"]
    assert cell.compression_ratio == 1.0 and cell.perplexity == pytest.approx(6.75)
    text = table.to_text_table().to_markdown()
    assert "pi4 energy_j/query" in text and " ± " in text
    by_device = store.compare(by="device")
    assert [r.key for r in by_device.rows] == ["pi4", "pi5"]
    assert by_device.groups == ["tt-r8", "dense"]
    with pytest.raises(DatabaseError, match="no results for run 'nope'"):
        store.compare("nope")


def test_compare_shows_accuracy_measured_once_on_the_controller(store: Store) -> None:
    fill(store)
    for variant, method, ratio, acc in (
        ("dense", "dense", None, 0.625),
        ("tt-r8", "tt", 0.89, 0.5),
    ):
        trial = make_trial(
            store,
            device="controller",
            variant=variant,
            task="choice",
            method=method,
            ratio=ratio,
            meter_kind="none",
        )
        scores = (("acc", acc), ("acc_norm", acc + 0.125), ("items", 8.0))
        events = trial_events(meter_kind="none", perplexity=None, scores=scores, task="choice")
        store.ingest_events(trial, events)
    table = store.compare()
    assert table.groups[-1] == "controller"
    rows = {(r.key, r.task): r for r in table.rows}
    assert rows[("dense", "choice")].cells["controller"].accuracy == 0.625
    assert rows[("tt-r8", "choice")].cells["controller"].accuracy == 0.5
    # latency and energy rows of the boards show the variant's accuracy beside them
    assert rows[("dense", "generate")].cells["pi4"].accuracy == 0.625
    assert rows[("tt-r8", "generate")].cells["pi5"].accuracy == 0.5
    text = table.to_text_table().to_markdown()
    assert "pi4 acc" in text and "0.625" in text
    (result,) = store.results(ResultFilter(device="controller", variant="dense"))
    assert result.scores == {"acc": 0.625, "acc_norm": 0.75, "items": 8.0}


def test_compare_on_an_empty_database(store: Store) -> None:
    with pytest.raises(DatabaseError, match="no runs"):
        store.compare()


def test_runs_lists_counts(store: Store) -> None:
    fill(store)
    store.finish_run("run-1", "ok")
    (run,) = store.runs()
    assert (run.run_id, run.status, run.trials, run.devices, run.trials_ok) == (
        "run-1",
        "ok",
        4,
        2,
        4,
    )


def test_sql_reads_and_passes_text_untouched(store: Store, reader_url: str) -> None:
    fill(store)
    with open_store(reader_url, read_only=True) as ro:
        result = ro.query("SELECT name, '10:30 50%' AS odd FROM devices ORDER BY name")
    assert result.columns == ["name", "odd"]
    assert result.rows == [("pi4", "10:30 50%"), ("pi5", "10:30 50%")]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO devices (name, created_at, updated_at) VALUES ('x', '2025-01-01', "
        "'2025-01-01')",
        "DELETE FROM runs",
        "CREATE TABLE sneaky (x integer)",
    ],
)
def test_writes_through_query_are_refused_by_the_database(
    store: Store, reader_url: str, sql: str
) -> None:
    fill(store)
    with open_store(reader_url, read_only=True) as ro, pytest.raises(ReadOnlyError):
        ro.query(sql)
    assert len(store.runs()) == 1 and len(store.results()) == 4


def test_query_cannot_escape_its_read_only_transaction(store: Store, reader_url: str) -> None:
    fill(store)
    attempts = [
        "COMMIT; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DELETE FROM runs",
        "DELETE FROM runs; SELECT 1",
    ]
    with open_store(reader_url, read_only=True) as ro:
        for sql in attempts:
            with pytest.raises(DatabaseError):
                ro.query(sql)
    assert len(store.runs()) == 1


def test_query_needs_a_read_only_store(store: Store) -> None:
    with pytest.raises(DatabaseError, match="read-only store"):
        store.query("SELECT 1")
