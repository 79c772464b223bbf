"""Per-phase energy, provenance and stability: stored from the events, aggregated by
``results`` and shown by ``results --format json``, ``compare`` and the results table."""

from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from db.store import Store, open_store
from orchestrator.cli import build_app
from tests.db.conftest import make_trial
from tests.db.factories import trial_events

PROVENANCE = {
    "board": "Raspberry Pi 5 Model B Rev 1.0",
    "kernel": "6.6.51+rpt-rpi-2712",
    "firmware": "2024/09/23 14:02:56; version 4b019946 (release) (embedded)",
    "cpu_governor": "ondemand",
    "cpu_freq_min_mhz": 1500.0,
    "cpu_freq_max_mhz": 2400.0,
    "meter_kind": "pi5-pmic",
    "meter_model": "Raspberry Pi 5 PMIC (vcgencmd pmic_read_adc)",
    "meter_firmware": None,
    "meter_boundary": "PMIC rails",
    "meter_rate_hz": 10.0,
    "meter_error_bound": {"family": "Pi 5 PMIC", "window_s": 1.0, "energy": 0.2, "idle": 0.03},
}


def phased_events(seed: int, *, unstable: bool = False, drift: float = 0.01) -> list[dict]:
    """A trial's events with the fields the agent adds: phase energies, provenance,
    the stable start and the drift record."""
    events = trial_events(seed=seed)
    for n, ev in enumerate(e for e in events if e["type"] == "window" and e["kind"] == "queries"):
        prefill_resolved = n % 2 == 0
        ev.update(
            prefill_energy_j=0.4 * ev["queries"],
            decode_energy_j=1.2 * ev["queries"],
            prefill_tokens=20 * ev["queries"],
            decode_tokens=15 * ev["queries"],
            prefill_fresh_samples=12 if prefill_resolved else 3,
            decode_fresh_samples=40,
            prefill_under_resolved=not prefill_resolved,
            decode_under_resolved=False,
            energy_j_per_prefill_token=0.02 + 0.001 * n if prefill_resolved else None,
            energy_j_per_decode_token=0.08 + 0.001 * n,
        )
    for ev in events:
        if ev["type"] == "query":
            ev.update(
                decode_tokens=15, prefill_energy_j=0.4, decode_energy_j=1.2, prefill_fresh_samples=1
            )
        elif ev["type"] == "hello":
            ev["provenance"] = PROVENANCE
        elif ev["type"] == "done":
            ev["provenance"] = {"meter_lag_s": 0.05, "meter_lag_ranged": True, "fresh_samples": 812}
            ev["stability"] = {
                "stable": not unstable,
                "waited_s": 60.0 if unstable else 4.5,
                "idle_before_w": 3.2,
                "idle_after_w": 3.2 * (1 + drift),
                "idle_drift": drift,
                "drifted": abs(drift) > 0.05,
            }
    return events


def _fill(store: Store) -> tuple[int, int]:
    steady = make_trial(store, variant="dense")
    store.ingest_events(steady, phased_events(steady))
    shaky = make_trial(store, variant="tt-r8", method="tt", ratio=2.0)
    store.ingest_events(shaky, phased_events(shaky, unstable=True, drift=0.12))
    return steady, shaky


def test_results_carry_phase_energy_provenance_and_stability(store: Store) -> None:
    _fill(store)
    rows = {r.variant: r for r in store.results()}
    dense, tt = rows["dense"], rows["tt-r8"]
    windows = [e for e in phased_events(1) if e["type"] == "window" and e["kind"] == "queries"]
    resolved = [
        w["energy_j_per_prefill_token"] for w in windows if w["prefill_under_resolved"] is False
    ]
    assert dense.energy_j_per_prefill_token_median == pytest.approx(statistics.median(resolved))
    assert dense.energy_j_per_decode_token_median == pytest.approx(
        statistics.median(w["energy_j_per_decode_token"] for w in windows)
    )
    assert "prefill-under-resolved" in dense.flags and "decode-under-resolved" not in dense.flags
    # hello's record and done's findings are merged
    assert dense.provenance == {
        **PROVENANCE,
        "meter_lag_s": 0.05,
        "meter_lag_ranged": True,
        "fresh_samples": 812,
    }
    assert dense.stability["stable"] is True and "unstable-start" not in dense.flags
    assert "unstable-start" in tt.flags and "idle-drift" in tt.flags
    assert tt.stability["idle_drift"] == 0.12


def test_the_settled_phase_is_the_stability_record_of_an_unfinished_trial(store: Store) -> None:
    trial = make_trial(store)
    events = trial_events(seed=trial)[:3]
    last = events[-1]
    settled = {"seq": last["seq"] + 1, "type": "phase", "t": last["t"], "wall": last["wall"]}
    settled.update(
        phase="settled", stable=False, waited_s=60.0, observed="temperature spanned 3.0 C"
    )
    store.ingest_events(trial, [*events, settled])
    (row,) = store.results()
    assert row.stability == {
        "stable": False,
        "waited_s": 60.0,
        "observed": "temperature spanned 3.0 C",
    }
    assert "unstable-start" in row.flags


def cli(*args: str) -> str:
    result = CliRunner().invoke(build_app(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_results_json_compare_and_table_show_them(db_url: str) -> None:
    with open_store(db_url) as store:
        _fill(store)
    rows = json.loads(cli("results", "--db", db_url, "--format", "json"))
    dense = next(r for r in rows if r["variant"] == "dense")
    assert dense["provenance"]["firmware"].startswith("2024/09/23")
    assert dense["provenance"]["meter_error_bound"]["energy"] == 0.2
    assert dense["stability"]["waited_s"] == 4.5
    assert dense["energy_j_per_decode_token_median"] == pytest.approx(0.0815, rel=0.05)
    table = cli("results", "--db", db_url)
    assert "j/prefill_tok" in table and "j/decode_tok" in table and "unstable-start" in table
    records = json.loads(cli("compare", "--db", db_url, "-f", "json"))
    cell = next(r for r in records if r["variant"] == "dense")["pi5"]
    assert cell["energy_j_per_prefill_token_median"] is not None
    assert cell["energy_j_per_decode_token_median"] is not None
    md = cli("compare", "--db", db_url, "-f", "markdown")
    assert "j/decode_tok" in md and "idle-drift" in md
