"""Task-quality comparisons of a compressed variant against the dense model.

Used by the reports beside latency and energy. Both sides must come from the same task
parameters (same text, window and stride; same prompts and max_new_tokens).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from tasks.errors import TaskError

Hashes = Mapping[int, str | None] | Sequence[str | None]


def _positive(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TaskError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise TaskError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


def perplexity_ratio(variant_ppl: float, dense_ppl: float) -> float:
    """Variant perplexity / dense perplexity (1.0: no loss; above 1: worse)."""
    return _positive(variant_ppl, "variant perplexity") / _positive(dense_ppl, "dense perplexity")


def combined_perplexity(parts: Iterable[tuple[float, int]]) -> float:
    """Perplexity of several shards from their (nll_sum, scored_tokens): exp(sum / count)."""
    nll_total = 0.0
    tokens = 0
    for nll_sum, scored in parts:
        nll_total += nll_sum
        tokens += scored
    if tokens <= 0:
        raise TaskError("no scored tokens to combine into a perplexity")
    return math.exp(nll_total / tokens)


def _by_index(hashes: Hashes) -> dict[int, str | None]:
    if isinstance(hashes, Mapping):
        return dict(hashes)
    return dict(enumerate(hashes))


def identical_output_share(variant_hashes: Hashes, dense_hashes: Hashes) -> float:
    """Share of generated outputs identical to dense's, matched by query index.

    Either side is a sequence (position = query index) or a mapping of query index to the
    output's sha256. Only indices present with a hash on both sides are compared.
    """
    variant, dense = _by_index(variant_hashes), _by_index(dense_hashes)
    compared = [
        i for i in variant.keys() & dense.keys() if variant[i] is not None and dense[i] is not None
    ]
    if not compared:
        raise TaskError(
            "no query index has an output hash on both the variant and dense side",
            hint="compare generate results of the same prompts and query count",
        )
    return sum(variant[i] == dense[i] for i in compared) / len(compared)
