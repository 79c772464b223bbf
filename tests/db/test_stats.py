"""Order-statistic confidence interval of the median, percentiles, number formatting."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from db.formatting import TextTable, format_spread, round_sig
from db.stats import median_ci_ranks, percentile, summarize
from tasks.numbers import format_sig


def coverage(n: int, j: int, k: int) -> float:
    """P(j <= B < k) for B ~ Binomial(n, 1/2): the interval [x_(j), x_(k)] covers it."""
    return sum(math.comb(n, i) for i in range(j, k)) / 2**n


@pytest.mark.parametrize("n", [6, 7, 10, 25, 100, 500, 1000])
def test_ranks_reach_95_percent_and_are_the_narrowest(n: int) -> None:
    j, k = median_ci_ranks(n)
    assert coverage(n, j, k) >= 0.95
    assert coverage(n, j + 1, k - 1) < 0.95


def test_too_few_observations_have_no_interval() -> None:
    assert median_ci_ranks(5) is None
    s = summarize([1.0, 2.0, 3.0])
    assert s.median == 2.0 and s.ci_low is None and s.ci_high is None


def test_normal_approximation_for_large_n_covers() -> None:
    j, k = median_ci_ranks(5000)
    assert 0.95 <= coverage(5000, j, k) < 0.96


def test_interval_covers_the_true_median_about_95_percent_of_the_time() -> None:
    rng = random.Random(7)
    hits = sum(
        s.ci_low <= 1.0 <= s.ci_high
        for s in (summarize([rng.expovariate(math.log(2)) for _ in range(30)]) for _ in range(2000))
    )
    assert 0.93 <= hits / 2000 <= 0.99


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50))
def test_percentile_matches_numpy(values: list[float]) -> None:
    import numpy as np

    data = sorted(values)
    for q in (25, 50, 90):
        assert percentile(data, q) == pytest.approx(float(np.percentile(data, q)), abs=1e-6)


def test_summary_ignores_missing_values() -> None:
    s = summarize([None, 1.0, float("nan"), 3.0])
    assert (s.n, s.median, s.iqr) == (2, 2.0, 1.0)


@pytest.mark.parametrize(
    ("median", "half_iqr", "text"),
    [
        (0.30412, 0.0061, "0.304 ± 0.006"),
        (0.30412, 0.013, "0.304 ± 0.013"),
        (2.5531, 0.04, "2.55 ± 0.04"),
        (1234.5, 56.0, "1230 ± 60"),
        (0.30412, 0.00001, "0.304"),
        (0.30412, None, "0.304"),
        (None, 0.1, "—"),
    ],
)
def test_format_spread(median: float | None, half_iqr: float | None, text: str) -> None:
    assert format_spread(median, half_iqr) == text


def test_format_sig_and_round_sig() -> None:
    assert format_sig(6.754) == "6.75"
    assert format_sig(1.0) == "1.00"
    assert format_sig(0.0705123) == "0.0705"
    assert format_sig(1.5e7) == "1.50e+07"
    assert round_sig(0.123456789) == 0.1235 and round_sig(True) is True
    assert round_sig(float("inf")) is None


def test_text_table_renderers() -> None:
    table = TextTable(
        headers=["variant", "ratio", "ppl"],
        rows=[["dense", "1.00", "6.75"]],
        groups=[("", 1), ("pi5", 2)],
        notes=["n"],
    )
    md = table.to_markdown()
    assert "| variant | pi5 ratio | pi5 ppl |" in md and "- n" in md
    assert table.to_csv().splitlines() == ["variant,pi5 ratio,pi5 ppl", "dense,1.00,6.75"]
