"""The renderers of bench_compress.py's every-row runs and bench_frontier.py's every-text
frontier (the older layouts are covered by test_report.py)."""

from __future__ import annotations

from bench.sections import compress_section, frontier_section


def _rank(rank: int, batched: float, loop: float) -> dict:
    return {
        "rank": rank,
        "batched_s": batched,
        "batched_runs_s": [batched] * 3,
        "tensorly_s": loop,
        "tensorly_bare_loop_s": loop / 2,
        "speedup": round(loop / batched, 2),
        "speedup_vs_bare_loop": round(loop / 2 / batched, 2),
        "mean_rel_error_batched": 0.5273,
        "mean_rel_error_tensorly": 0.5273,
        "max_abs_difference_of_row_errors": 2.5e-12,
    }


def test_compress_by_rank_gives_both_speed_ups_per_rank() -> None:
    doc = {
        "table": [49152, 576],
        "shape": [8, 8, 9],
        "by_rank": {"6": _rank(6, 1.0, 24.0), "8": _rank(8, 0.5, 22.0)},
        "threads": 2,
    }
    section = compress_section(doc)
    assert "rank 6: 24.0x (12.0x against the bare loop" in section.readme_line
    assert "rank 8: 44.0x" in section.readme_line
    assert "no extrapolation" in " ".join(section.notes)


def _row(variant: str, ratio: float, changes: dict, method: str, frontier: bool) -> dict:
    return {
        "variant": variant,
        "method": method,
        "ratio": ratio,
        "ratio_vs_source": ratio * 8.5 / 32,
        "source_format": "Q8_0",
        "size_bytes": 2**20,
        "ppl_change": changes,
        "ppl_tied_change": None,
        "on_frontier": frontier,
    }


def test_frontier_by_text_states_the_goal_and_marks_the_frontier() -> None:
    texts = ["calibration", "eval", "dialogue"]
    doc = {
        "texts": texts,
        "evaluation_texts": texts[1:],
        "calibration_text": "calibration",
        "max_tokens": 512,
        "window": 512,
        "caveats": ["dense is Q8_0 de-quantised"],
        "rows": [
            _row("dense", 1.0, dict.fromkeys(texts, 0.0), "dense", False),
            _row(
                "tt:rank=8:cores=int8",
                3.49,
                dict(zip(texts, [0.01, 0.042, 0.061], strict=True)),
                "tt",
                True,
            ),
        ],
        "goal_tt": {
            "statement": "a TT-based variant at >= 2x ...",
            "variant": "tt:rank=8:cores=int8",
            "ratio": 3.49,
            "changes": {"eval": 0.042, "dialogue": 0.061},
            "met": False,
        },
    }
    section = frontier_section(doc)
    assert "not met: `tt:rank=8:cores=int8` chosen on the calibration text, 3.49x" in (
        section.readme_line
    )
    assert "dialogue +6.10 %" in section.readme_line
    text = "\n".join(section.lines)
    assert "ratio vs source (Q8_0)" in text and "**(frontier)**" in text
    assert "dense is Q8_0 de-quantised" in section.notes


def test_a_perplexity_below_dense_reads_as_a_negative_change() -> None:
    from bench.sections import ppl_text

    assert ppl_text(19.8, 20.0, "int:bits=4") == "19.8 (-1.0 %)"
    assert ppl_text(20.4, 20.0, "int:bits=4") == "20.4 (+2.0 %)"


def _family(name: str, trials: int, cv: float | None, bias: float, goal: bool | None) -> dict:
    phase = {
        "energy_error": {"n": trials, "median": 0.01, "p90": 0.02, "worst": 0.03},
        "mean_error": 0.012,
        "windows_resolved": 2 * trials,
        "windows": 2 * trials,
        "seconds_per_trial": 1.3,
    }
    return {
        "kind": name,
        "family": name,
        "trials": trials,
        "query_s": 1.0,
        "energy_j_per_query": {"n": trials, "mean": 3.3456, "cv": cv},
        "true_energy_j_per_query": {"n": trials, "mean": 3.35, "cv": 0.008},
        "ratio_to_true": {"n": trials, "mean": 0.998, "cv": 0.0031},
        "bias": {"mean": bias, "n": trials, "median": abs(bias), "p90": 0.01, "worst": 0.02},
        "phases": {"prefill": {**phase, "windows_resolved": 0}, "decode": phase},
        "settle_waits_s": [1.5] * trials,
        "unstable_starts": 0,
        "goal_met": goal,
        "provenance_example": {"kernel": "6.6", "meter_error_bound": {"energy": 0.04}},
    }


def test_the_repeatability_table_says_where_the_goal_is_missed() -> None:
    from bench.sections import RENDERERS

    doc = {
        "idle_w": 2.0,
        "busy_w_per_core": 1.5,
        "goal": {"cv": 0.03, "bias": 0.02},
        "load_average_1min": 7.5,
        "families": [
            _family("hwmon", 10, 0.012, -0.004, True),
            _family("RDTech UM", 10, 0.061, 0.03, False),
        ],
        "caveats": ["shared machine"],
    }
    section = RENDERERS["repeat"](doc)
    assert section.lines[2] == (
        "| hwmon | 10 | 3.35 | 1.2 % (0.80 %) | 0.31 % | -0.40 % (2.0 %) | +1.2 %, worst 3.0 % "
        "(0/20 windows resolved) | +1.2 %, worst 3.0 % (20/20 windows resolved) | yes |"
    )
    assert section.lines[3].endswith("| no |")
    assert "not met on RDTech UM" in section.readme_line
    assert "reported / true varies by RDTech UM 0.31 %" in section.readme_line
    assert any('"kernel": "6.6"' in note for note in section.notes)
    one = {**doc, "families": [_family("hwmon", 1, None, -0.004, None)]}
    assert "too few trials to judge" in RENDERERS["repeat"](one).readme_line
