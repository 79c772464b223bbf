"""The benchmark report generator on fixture results, and the harness around it.

No benchmark runs here: the results are fixture JSON files, and the harness is exercised
with a stand-in module (tests/bench/sleepy.py) that exits or sleeps on demand.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.__main__ import BENCHMARKS, Benchmark, run_benchmark, write_harness
from bench.common import ROOT, sig, spread
from tasks.errors import ConfigError
from tasks.numbers import MISSING

MACHINE = {
    "cpu_model": "Test CPU 9000",
    "usable_cores": 2,
    "ram_gib": 8.0,
    "os": "Linux-test",
    "python": "3.11.7",
    "torch": "2.13.0+cpu",
    "date": "2025-06-01T10:00:00Z",
}


def spread_dict(median: float, iqr: float = 0.0, n: int = 8) -> dict[str, float]:
    return {
        "n": n,
        "median": median,
        "q1": median - iqr / 2,
        "q3": median + iqr / 2,
        "min": median - iqr,
        "max": median + iqr,
        "iqr": iqr,
    }


def fixtures() -> dict[str, dict[str, Any]]:
    mode = {
        "embedding_resident_bytes": 113246208,
        "head_resident_bytes": 113246208,
        "rss_model_bytes": 600 * 2**20,
        "outputs_identical_to_dense": 8,
    }
    return {
        "compress_speed": {
            "table": [49152, 576],
            "shape": [8, 8, 9],
            "rank_cap": [8, 8],
            "batched_s": 2.0,
            "tensorly_sample_rows": 2000,
            "tensorly_sample_s": 1.0,
            "tensorly_extrapolated_s": 24.6789,
            "mean_rel_error_batched": 0.2202150,
            "mean_rel_error_tensorly": 0.2202150,
            "max_abs_difference_of_row_errors": 3.8e-15,
            "threads": 2,
        },
        "frontier": {  # the fields bench/bench_frontier.py writes
            "text": "builtin evaluation text",
            "window": 512,
            "max_tokens": 2048,
            "dense_perplexity": 6.7512,
            "rows": [
                {
                    "variant": "dense",
                    "ratio": 1.0,
                    "rel_error_mean": 0.0,
                    "ppl_input": 6.7512,
                    "ppl_tied": 6.7512,
                    "family": "dense",
                },
                {
                    "variant": "tt:ratio=2.0",
                    "ratio": 2.0123,
                    "rel_error_mean": 0.63512,
                    "ppl_input": 9.2345,
                    "ppl_tied": 289.45,
                    "family": "tt",
                },
            ],
        },
        "inference": {
            "machine": MACHINE,
            "variant": "tt:ratio=2",
            "queries": 8,
            "max_new_tokens": 32,
            "warmup_queries": 1,
            "threads": 2,
            "order": "interleaved",
            "artifact": {
                "compression_ratio": 2.0123,
                "reconstruction_error": 0.63512,
                "head_policy": "keep-dense",
            },
            "modes": {
                "dense": {
                    **mode,
                    "latency_s": spread_dict(1.23456, 0.05),
                    "latency_ratio_vs_dense": spread_dict(1.0),
                },
                "tt-on-the-fly": {
                    **mode,
                    "embedding_resident_bytes": 56623104,
                    "latency_s": spread_dict(1.3, 0.04),
                    "latency_ratio_vs_dense": spread_dict(1.05321, 0.01),
                    "outputs_identical_to_dense": 0,
                },
                "tt-materialized": {
                    **mode,
                    "latency_s": spread_dict(1.24, 0.05),
                    "latency_ratio_vs_dense": spread_dict(1.00412, 0.01),
                },
            },
        },
        "fleet": {
            "skipped": "fleet tests need root (to create users and start sshd)",
            "quick": True,
        },
        "db": {
            "backends": {
                "sqlite": {
                    "power_samples_per_s": 247765,
                    "query_events_per_s": 12925,
                    "compare_s": 8.02,
                    "query_rows": 1000000,
                },
                "postgresql": {"skipped": "postgres is not installed"},
            }
        },
        "quality": {
            "model": "SmolLM2-135M-Instruct",
            "threads": 2,
            "speed": {
                "items": 40,
                "rounds": 3,
                "sides": {
                    "tslm-fleet": {"items_per_s": 6.1234, "identical_decisions": True},
                    "lm-eval HFLM batch 1": {"items_per_s": 2.04, "identical_decisions": True},
                },
                "fastest_lm_eval": "lm-eval HFLM batch 1",
                "ratio_vs_fastest_lm_eval": 3.0017,
                "identical_decisions": True,
            },
            "variants": [
                {
                    "variant": "dense",
                    "ratio": 1.0,
                    "choice": {
                        "acc": 0.675,
                        "acc_stderr": 0.07499,
                        "acc_norm": 0.7,
                        "acc_norm_stderr": 0.0734,
                        "items": 40.0,
                    },
                    "last_word": {
                        "acc": 0.45,
                        "acc_stderr": 0.0797,
                        "word_perplexity": 12.345,
                        "items": 40.0,
                    },
                },
                {
                    "variant": "tt:ratio=2.0",
                    "ratio": 2.0123,
                    "choice": {"acc": 0.5, "acc_norm": 0.55, "items": 40.0},
                    "last_word": {"acc": 0.2, "word_perplexity": 80.01, "items": 40.0},
                },
            ],
        },
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder with every fixture but meters.json, and a harness record."""
    folder = tmp_path / "results"
    folder.mkdir()
    for stem, doc in fixtures().items():
        (folder / f"{stem}.json").write_text(json.dumps(doc))
    (folder / "frontier.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    write_harness(
        folder / "harness.json",
        [
            {
                "name": "db",
                "result": "db",
                "status": "timeout",
                "exit_code": None,
                "time_limit_s": 240,
                "log": "bench/results/logs/db.log",
            }
        ],
        "2025-06-01T09:00:00Z",
        quick=False,
    )
    doc = json.loads((folder / "harness.json").read_text())
    doc["machine"] = MACHINE
    (folder / "harness.json").write_text(json.dumps(doc))
    return folder


def test_summary_shows_ratios_spread_and_what_did_not_run(results: Path) -> None:
    text = report.write_summary(results).read_text()
    assert text.startswith("# Benchmark results")
    assert "Test CPU 9000 (2 cores), 8.0 GiB RAM" in text and "2025-06-01T10:00:00Z" in text
    # 24.6789 / 2.0 = 12.339...: three significant figures, never more
    assert "batched TT-SVD is 12.3x faster than the per-row tensorly loop" in text
    assert "12.34" not in text
    assert "| dense | 1.23 (IQR 0.050) |" in text
    assert "1.05 (IQR 0.010)" in text  # paired ratio with its spread
    assert "| sqlite | 248,000 | 12,900 | 8.02 s over 1,000,000 rows |" in text
    assert "| postgresql | skipped | postgres is not installed |" in text
    db = text.split("## Results database", 1)[1].split("## ", 1)[0]
    assert "ran past its 240 s limit" in db and "from an earlier run" in db
    meters = text.split("## Power-meter sampling", 1)[1]
    assert meters.split("\n\n")[1].strip() == "_Not run._"
    fleet = text.split("## Fleet scaling", 1)[1].split("## ", 1)[0]
    assert "fleet tests need root" in fleet and "Smoke run (--quick)" in fleet
    assert "![perplexity vs compression ratio](frontier.png)" in text
    assert "| `tt:ratio=2.0` | 2.01 | 0.635 | 9.23 (+37 %) | 289 (43x) |" in text
    assert "the best input-only perplexity of all methods is 9.23 (+37 %)" in text
    assert "the best input-only perplexity of the tensor-train variants is 9.23 (+37 %)" in text


def test_readme_section_is_replaced_and_nothing_else(results: Path, tmp_path: Path) -> None:
    before = "# Project\n\nIntro text.\n\n## Results\n\n" + report.START
    after = report.END + "\n\n## Licence\n\nMIT\n"
    readme = tmp_path / "README.md"
    readme.write_text(before + "\nRun `make bench` to fill this.\n" + after)
    report.update_readme(readme, results)
    first = readme.read_text()
    assert first.startswith(before) and first.endswith(after)
    body = first[len(before) : -len(after)]
    assert "make bench` to fill" not in body
    assert "Test CPU 9000" in body and "2025-06-01T10:00:00Z" in body
    # no ratio against the source format in these (older) rows
    assert f"| `dense` | 1.00x | {MISSING} | 6.75 | 6.75 | 0 | 1.23 s |" in body
    assert (
        f"| `tt:ratio=2.0` | 2.01x | {MISSING} | 9.23 (+37 %) | 289 (43x) | 0.635 | 1.30 s (1.05x) |"
        in body
    )
    assert "![perplexity vs compression ratio](bench/results/frontier.png)" in body
    assert "- **Power-meter sampling**: Not run." in body
    assert "12.3x faster" in body
    assert "NOT comparable to published benchmark figures" in body
    assert "| `dense` | 1.00x | 0.675 ± 0.075 | 0.700 ± 0.073 | 0.450 ± 0.080 | 12.3 |" in body
    assert "| `tt:ratio=2.0` | 2.01x | 0.500 | 0.550 | 0.200 | 80.0 |" in body
    assert "6.12 items/s with 2 threads, 3.00x lm-eval's own HF wrapper" in body
    report.update_readme(readme, results)
    assert readme.read_text() == first  # regenerating is stable


def test_readme_without_markers_is_a_clear_error(results: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n" + report.END + "\n" + report.START + "\n")
    with pytest.raises(ConfigError) as caught:
        report.update_readme(readme, results)
    assert "markers" in str(caught.value) and caught.value.hint
    assert readme.read_text() == "# Project\n" + report.END + "\n" + report.START + "\n"


def test_broken_results_are_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "inference.json").write_text("{not json")
    (tmp_path / "frontier.json").write_text(json.dumps({"rows": "unexpected"}))
    (tmp_path / "compress_speed.json").write_text(json.dumps({"table": [1, 2]}))
    (tmp_path / "custom.json").write_text(json.dumps({"x": 1}))
    text = report.summary_markdown(tmp_path)
    assert "unreadable result: inference.json" in text
    assert "compress_speed.json does not have the expected fields" in text
    assert "Raw result: [custom.json](custom.json)" in text
    assert "_Not run._" in text  # db, fleet, meters
    report.readme_section(tmp_path)  # and the README section renders too


def test_significant_figures_and_spread() -> None:
    assert [sig(v) for v in (0.12345, 9.996, 1234.5, 247765, 2.0, 0)] == [
        "0.123",
        "10.0",
        "1,230",
        "248,000",
        "2.00",
        "0",
    ]
    assert sig(None) == sig(float("nan")) == MISSING
    s = spread([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s.median, s.q1, s.q3, s.iqr, s.n) == (3.0, 2.0, 4.0, 2.0, 5)
    assert spread([7.0]).iqr == 0.0


def test_list_names_every_benchmark() -> None:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    listed = [line.split()[0] for line in out.splitlines()]
    assert listed[:8] == [
        "compress",
        "frontier",
        "inference",
        "fleet",
        "db",
        "meters",
        "truth",
        "quality",
    ]
    assert listed[8:] == ["loadonce", "scale", "repeat"]
    assert listed == list(BENCHMARKS)
    assert time.monotonic() - started < 20  # no torch import to list them


def test_harness_records_failures_and_time_limits(tmp_path: Path) -> None:
    failing = Benchmark(
        "tests.bench.sleepy", "sleepy", "exits 3", time_limit_s=30, quick_args=("--exit", "3")
    )
    run = run_benchmark("failing", failing, quick=True, time_limit_s=30, log_dir=tmp_path)
    assert (run["status"], run["exit_code"]) == ("failed", 3)
    assert "sleepy started" in (tmp_path / "failing.log").read_text()
    slow = Benchmark(
        "tests.bench.sleepy", "sleepy", "sleeps", time_limit_s=1, quick_args=("--sleep", "60")
    )
    started = time.monotonic()
    run = run_benchmark("slow", slow, quick=True, time_limit_s=1, log_dir=tmp_path)
    assert run["status"] == "timeout" and time.monotonic() - started < 15


def test_the_scale_curve_names_devices_that_fell_behind() -> None:
    from bench.sections import RENDERERS

    point = {
        "wall_s": 20.0,
        "controller_cpu_s": 3.0,
        "controller_peak_rss_mib": 90.0,
        "peak_ssh_connections": 4,
        "all_measuring_s": 5.0,
        "dashboard_refresh_ms": 12.0,
        "never_measured": [],
    }
    doc = {
        "variants": ["dense", "int8"],
        "caveats": "noisy",
        "curve": [
            {"devices": 1, **point, "fell_behind": []},
            {"devices": 4, **point, "fell_behind": ["dev04"]},
        ],
        "fit": {
            "cpu_s_per_device_per_trial": 0.0123,
            "rss_mib_per_device": 1.5,
            "rss_fixed_mib": 80.0,
        },
    }
    section = RENDERERS["scale"](doc)
    assert "0.0123 s per device per trial" in section.readme_line
    assert any("dev04" in line for line in section.lines)
    assert section.lines[2].startswith("| 1 |") and section.lines[2].endswith("| none |")


def test_readme_lines_carry_their_caveats_and_dates(results: Path) -> None:
    body = report.readme_section(results)
    speed = next(line for line in body.splitlines() if "**Compression speed**" in line)
    assert "time extrapolated linearly from" in speed  # a speed-up against an estimate
    assert "_Measured on an unrecorded date._" in speed  # no date in the fixture: said so
    assert "_Measured 2025-06-01._" in body
    for line in body.splitlines():
        if line.startswith("- **") and "Not run" not in line:
            assert "_Measured " in line, line  # every figure has its own date


def test_meter_figures_say_they_come_from_emulators() -> None:
    from bench.sections import meters_section

    doc = {
        "rates": [
            {
                "kind": "um25c",
                "nominal_rate_hz": 2.0,
                "rate_hz": 10.0,
                "fresh_rate_hz": 2.0,
                "gaps": 0,
                "sampler_cpu_pct": 0.5,
            }
        ],
        "integration": [
            {"meter": "um25c", "trace": "steps", "max_error_pct": 0.01, "resolved": True}
        ],
        "end_to_end": [],
    }
    line = meters_section(doc).readme_line
    assert "emulators, not physical meters" in line


def test_the_model_weights_are_named_from_the_measured_file() -> None:
    from tasks.errors import ModelError
    from tasks.hashing import sha256_file
    from tasks.models import embedded_gguf

    try:
        path = embedded_gguf()
    except ModelError:
        pytest.skip("the embedded SmolLM2 GGUF is not installed")
    text = report.model_weights({"model_sha256": sha256_file(path)})
    assert text is not None and text.endswith("GGUF, de-quantised to fp32")
    assert "Q" in text.split(" GGUF")[0]  # a quantised type, read from the file
    assert report.model_weights({"model_sha256": "0" * 64}) is None  # another file: unsaid
    assert report.model_weights({"model_weights": "fp16 safetensors"}) == "fp16 safetensors"


def test_tied_heads_table() -> None:
    from bench.sections import inference_section

    def copy(decode: float, peak: int, head: float, kernel: str | None) -> dict[str, Any]:
        return {
            "latency_s": spread_dict(1.0),
            "ttft_s": spread_dict(0.1),
            "decode_s_per_token": spread_dict(decode, 0.001),
            "latency_ratio_vs_dense": spread_dict(1.0),
            "outputs_identical_to_dense": 5,
            "embedding_resident_bytes": 1 << 20,
            "rss_model_bytes": 1 << 29,
            "peak_rss_bytes": peak,
            "head_1_token_s": spread_dict(head),
            "head_kernel": {"chosen": kernel} if kernel else None,
        }

    dense = copy(0.056, 800 << 20, 0.020, None)
    tied = copy(0.040, 700 << 20, 0.005, "int4pack+int8pack-bf16")
    tied["decode_speedup_vs_dense"] = 1.4
    tied["peak_rss_ratio_vs_dense"] = 0.875
    doc = {
        "variant": None,
        "queries": 5,
        "max_new_tokens": 24,
        "warmup_queries": 1,
        "threads": 2,
        "order": "interleaved",
        "artifact": {},
        "modes": {"dense": dense, "mixed:bits=8:head=tied": tied},
        "tied_artifacts": {"mixed:bits=8:head=tied": {"compression_ratio": 4.0}},
    }
    section = inference_section(doc)
    text = "\n".join(section.lines)
    assert "| `mixed:bits=8:head=tied` | 4.00x | 40.0 (IQR 1.0) | 1.40x | 5.00 | 700 |" in text
    assert "`int4pack+int8pack-bf16`" in text
    assert "decode 1.40x dense, peak RSS 0.875x dense" in section.readme_line
    assert "None" not in section.readme_line
    assert "no head at all" not in text and "floor" not in section.readme_line


def test_tied_heads_table_shows_the_decode_floor() -> None:
    from bench.sections import inference_section

    def copy(decode: float, head: float) -> dict[str, Any]:
        return {
            "latency_s": spread_dict(1.0),
            "ttft_s": spread_dict(0.1),
            "decode_s_per_token": spread_dict(decode, 0.001),
            "latency_ratio_vs_dense": spread_dict(1.0),
            "outputs_identical_to_dense": 5,
            "embedding_resident_bytes": 1 << 20,
            "head_1_token_s": spread_dict(head),
        }

    floor = copy(0.045, 0.00001)
    floor["decode_speedup_vs_dense"] = 1.25
    tied = copy(0.048, 0.002)
    tied["decode_speedup_vs_dense"] = 1.17
    doc = {
        "variant": None,
        "queries": 5,
        "max_new_tokens": 24,
        "warmup_queries": 1,
        "threads": 2,
        "order": "interleaved",
        "artifact": {},
        "floor": "no-head (floor)",
        "modes": {"dense": copy(0.056, 0.02), "fp16:head=tied": tied, "no-head (floor)": floor},
        "tied_artifacts": {"fp16:head=tied": {"compression_ratio": 2.0}},
    }
    section = inference_section(doc)
    text = "\n".join(section.lines)
    assert "| no head at all (floor) | — | 45.0 (IQR 1.0) | 1.25x |" in text
    assert "With no LM head at all, decode is 1.25x dense" in section.readme_line


def test_readme_bounds_table_states_each_bound_its_basis_and_the_measurement(
    tmp_path: Path,
) -> None:
    def errors(worst: float) -> dict[str, object]:
        return {"n": 4, "median": worst / 2, "p90": worst, "worst": worst}

    family = {
        "kind": "hwmon", "family": "hwmon", "window_s": 1.0, "bound_energy": 0.02,
        "bound_net": 0.04, "bound_idle": 0.02, "basis": "polled at 100 Hz, every step read",
        "jobs": 3, "energy": errors(0.011), "net": errors(0.013), "idle": errors(0.0),
        "lag_s": [0.02], "lag_problems": [], "holds": True,
    }  # fmt: skip
    empty = {"found_lag_s": [], "problems": [], "queries_within_bound": 0, "query_energy": {}}
    doc = {
        "benchmark": "truth", "quick": False, "idle_w": 2.0, "busy_w_per_core": 1.5,
        "load_average_1min": 4.2, "machine": {"date": "2026-12-02T15:00:00Z"},
        "families": [family],
        "lag": {"injected_s": 0.3, "query_s": 1.0, "bound_energy": 0.08,
                "with": {**empty, "found_lag_s": [0.31],
                         "query_energy": errors(0.05), "queries_within_bound": 4},
                "without": {**empty, "query_energy": errors(0.4)}},
    }  # fmt: skip
    results = tmp_path / "results"
    results.mkdir()
    (results / "truth.json").write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# P\n\n{report.BOUNDS_START}\nSTALE\n{report.BOUNDS_END}\n\n{report.START}\n{report.END}\n"
    )
    report.update_readme(readme, results)
    text = readme.read_text()
    bounds = text.split(report.BOUNDS_START)[1].split(report.BOUNDS_END)[0]
    assert "STALE" not in bounds
    row = (
        "| hwmon | 1.00 s | 2.0 % / 4.0 % / 2.0 % | 1.1 % / 1.3 % / < 0.01 % (3 jobs, 4 windows) |"
    )
    # the basis is stated as the code holds it now, not as the results file recorded it
    from agent.meters.bounds import BOUNDS

    assert f"{row} {BOUNDS['hwmon'].basis} |" in bounds
    assert "2026-12-02T15:00:00Z" in bounds and "load average 4.2" in bounds
    # a family the benchmark cannot serve is listed with its bound from agent/meters/bounds.py
    assert (
        "| FNIRSI | 1.00 s | 2.0 % / 4.0 % / 2.0 % | in `tests/agent/test_ground_truth.py` only |"
        in bounds
    )
    assert "4 of 4 queries within the 8.0 % bound with ranging, 0 of 4 without" in text
    assert "lag found 0.31 s" in text
    report.update_readme(readme, results)
    assert readme.read_text() == text
