"""Aggregate metrics of the ``choice`` and ``last-word`` tasks, as lm-eval defines them.

* an accuracy is the mean of per-item 0/1 outcomes; its standard error is the sample
  standard deviation (n - 1 in the denominator) over the square root of n;
* a multiple-choice prediction is the first choice of highest log-likelihood (``acc``),
  or of highest log-likelihood per character of the choice text (``acc_norm``);
* a last-word perplexity is exp(-mean per-item log-likelihood of the target word).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean (no items: an error)."""
    if not values:
        raise ValueError("no values to average")
    return math.fsum(values) / len(values)


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean; None with fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mu = mean(values)
    return math.sqrt(math.fsum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on ties (as numpy's argmax)."""
    best = 0
    for i, value in enumerate(values):
        if value > values[best]:
            best = i
    return best


def predictions(logprobs: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """(pred, pred_norm): argmax of the log-likelihoods, and of them per character."""
    per_char = [lp / float(len(choice)) for lp, choice in zip(logprobs, choices, strict=True)]
    return argmax(logprobs), argmax(per_char)


def word_perplexity(logprobs: Sequence[float]) -> float:
    """exp(-mean log-likelihood) over items (lm-eval's ``perplexity`` aggregation)."""
    return math.exp(-mean(logprobs))
