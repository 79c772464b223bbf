"""The variant-vs-dense quality helpers."""

from __future__ import annotations

import math

import pytest

from tasks.errors import TaskError
from tasks.quality import combined_perplexity, identical_output_share, perplexity_ratio


def test_perplexity_ratio() -> None:
    assert perplexity_ratio(9.0, 6.0) == 1.5
    assert perplexity_ratio(6, 6) == 1.0
    for bad in (0.0, -1.0, math.nan, math.inf, True, "6"):
        with pytest.raises(TaskError):
            perplexity_ratio(bad, 6.0)  # type: ignore[arg-type]
        with pytest.raises(TaskError):
            perplexity_ratio(6.0, bad)  # type: ignore[arg-type]


def test_identical_output_share_by_position_and_by_index() -> None:
    assert identical_output_share(["a", "b", "c", "d"], ["a", "x", "c", "y"]) == 0.5
    assert identical_output_share({0: "a", 2: "c", 7: "z"}, ["a", "b", "c"]) == 1.0
    assert identical_output_share({3: "q"}, {3: "r"}) == 0.0


def test_missing_hashes_are_not_compared() -> None:
    assert identical_output_share(["a", None, "c"], ["a", "b", "x"]) == 0.5
    with pytest.raises(TaskError, match="no query index"):
        identical_output_share({0: "a"}, {1: "a"})
    with pytest.raises(TaskError):
        identical_output_share([None], ["a"])


def test_combined_perplexity() -> None:
    assert combined_perplexity([(10.0, 5), (20.0, 15)]) == pytest.approx(math.exp(30 / 20))
    with pytest.raises(TaskError):
        combined_perplexity([])
