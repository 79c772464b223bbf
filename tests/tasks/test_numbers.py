"""The one number formatter: significant figures, carries, exponents, missing values."""

from __future__ import annotations

import pytest

from tasks.numbers import MISSING, format_sig


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.14159, "3.14"),
        (1234.5, "1230"),
        (0.012345, "0.0123"),
        (9.996, "10.0"),
        (99.96, "100"),
        (0.0, "0"),
        (-2.346, "-2.35"),
        (100.0, "100"),
        (5.0, "5.00"),
        (0.0705123, "0.0705"),
        (1.5e7, "1.50e+07"),
        (3.2e-5, "3.20e-05"),
        (float("nan"), MISSING),
        (float("inf"), MISSING),
        (None, MISSING),
    ],
)
def test_three_significant_figures(value: float | None, text: str) -> None:
    assert format_sig(value) == text


def test_grouped_thousands_and_other_widths() -> None:
    assert [format_sig(v, grouped=True) for v in (1234.5, 247765, 1.5e7, 2.0e9)] == [
        "1,230",
        "248,000",
        "15,000,000",
        "2.00e+09",
    ]
    assert format_sig(3.14159, 2) == "3.1"
    assert format_sig(0.099951, 4) == "0.09995"
