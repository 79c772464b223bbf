"""The strided window plan: every token scored once, with as much context as allowed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.errors import TaskError
from tasks.workloads.windows import plan_windows


@st.composite
def plans(draw):
    window = draw(st.integers(2, 40))
    stride = draw(st.integers(1, window))
    return draw(st.integers(2, 300)), window, stride


@given(plans())
def test_every_token_is_scored_once_with_the_most_context(plan) -> None:
    n, window, stride = plan
    windows = plan_windows(n, window, stride)
    scored = [p for w in windows for p in range(w.score_from, w.end)]
    assert len(scored) == len(set(scored))
    assert all(w.input_tokens <= window and w.begin < w.score_from for w in windows)
    assert [w.index for w in windows] == list(range(len(windows)))
    if stride < window:
        assert windows[-1].end == n
        assert scored == list(range(1, n))
        for w in windows:  # left context of each scored token
            assert w.score_from - w.begin >= min(w.score_from, window - stride)
    else:  # disjoint windows: the first token of each has no context inside its window
        unscored = set(range(n)) - set(scored)
        assert unscored == set(range(0, n, window))


def test_disjoint_windows_drop_a_trailing_single_token() -> None:
    windows = plan_windows(9, 4, 4)
    assert [(w.begin, w.end) for w in windows] == [(0, 4), (4, 8)]


def test_overlapping_plan_by_hand() -> None:
    windows = plan_windows(10, 6, 3)
    assert [(w.begin, w.end, w.score_from) for w in windows] == [(0, 6, 1), (3, 9, 6), (6, 10, 9)]


@pytest.mark.parametrize(("window", "stride"), [(1, 1), (4, 0), (4, 5)])
def test_invalid_plans(window: int, stride: int) -> None:
    with pytest.raises(TaskError):
        plan_windows(10, window, stride)
