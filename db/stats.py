"""Robust summaries of repeated measurements: median, percentiles, IQR and a
distribution-free 95% confidence interval of the median.

The interval uses order statistics: the number of observations below the true median
is Binomial(n, 1/2), so ``[x_(j), x_(k)]`` covers the median with probability
``P(j <= B < k)``; we take the narrowest symmetric pair of ranks with coverage >= 95%.
Below six observations no such pair exists and the interval is None (not enough data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: two-sided confidence level of the interval of the median
CONFIDENCE = 0.95
#: above this many observations the binomial is replaced by its normal approximation
_EXACT_LIMIT = 1000


@dataclass(frozen=True)
class Summary:
    """Summary of one measured quantity over ``n`` observations (None values dropped)."""

    n: int
    median: float | None
    p90: float | None
    p25: float | None
    p75: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def iqr(self) -> float | None:
        if self.p25 is None or self.p75 is None:
            return None
        return self.p75 - self.p25

    @property
    def half_iqr(self) -> float | None:
        iqr = self.iqr
        return None if iqr is None else iqr / 2


EMPTY = Summary(n=0, median=None, p90=None, p25=None, p75=None, ci_low=None, ci_high=None)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of already sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def median_ci_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, int] | None:
    """1-based ranks ``(j, k)`` with ``P(x_(j) <= median <= x_(k)) >= confidence``.

    None when ``n`` is too small for any pair of ranks to reach the confidence.
    """
    if n < 1:
        return None
    alpha = (1.0 - confidence) / 2.0
    if n > _EXACT_LIMIT:
        z = _normal_quantile(1.0 - alpha)
        half = z * math.sqrt(n) / 2.0
        j = max(1, math.floor(n / 2.0 - half))
        k = min(n, math.ceil(1 + n / 2.0 + half))
        return j, k
    # cdf[i] = P(B <= i) for B ~ Binomial(n, 1/2), computed in log space (no underflow)
    log_half_n = n * math.log(0.5)
    cdf, total = [], 0.0
    for i in range(n + 1):
        total += math.exp(
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n
        )
        cdf.append(total)
    # largest j with P(B <= j - 1) <= alpha; by symmetry k = n + 1 - j
    j = 0
    while j + 1 <= n and cdf[j] <= alpha:
        j += 1
    if j < 1:
        return None
    return j, n + 1 - j


def _normal_quantile(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def summarize(values: Sequence[float | None]) -> Summary:
    """Median, p90, quartiles and the 95% CI of the median of ``values``."""
    import numpy as np

    arr = np.fromiter(
        (math.nan if v is None else v for v in values), dtype=float, count=len(values)
    )
    data = np.sort(arr[np.isfinite(arr)])
    if data.size == 0:
        return EMPTY
    p25, median, p75, p90 = (float(x) for x in np.percentile(data, [25, 50, 75, 90]))
    ranks = median_ci_ranks(int(data.size))
    ci_low, ci_high = (
        (None, None) if ranks is None else (float(data[ranks[0] - 1]), float(data[ranks[1] - 1]))
    )
    return Summary(
        n=int(data.size), median=median, p90=p90, p25=p25, p75=p75, ci_low=ci_low, ci_high=ci_high
    )
