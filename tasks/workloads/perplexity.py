"""``perplexity``: strided sliding-window perplexity of a causal LM over a text.

Each window is one query and records the exact negative log-likelihood sum (nats,
float64) of the tokens it scores, so repetitions, devices or shards combine exactly:
perplexity = exp(sum of nll_sum / sum of scored_tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from tasks.workloads.base import QueryResult, Score
from tasks.workloads.params import parse_params
from tasks.workloads.windows import PreparedWindows, TextWindowParams


class PreparedPerplexity(PreparedWindows):
    """The perplexity task bound to a model and a tokenized text."""

    task_name = "perplexity"

    def measure(self, log_probs: Any, targets: Any) -> dict[str, Any]:
        picked = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
        return {"nll_sum": -float(picked.double().sum())}

    def scores(self, results: Sequence[QueryResult]) -> list[Score]:
        """perplexity, nll_sum and scored_tokens over all windows."""
        nll_sum = float(self._total(results, "nll_sum"))
        scored = int(self._total(results, "scored_tokens"))
        details = {**self._window_details(), "nll_sum": nll_sum, "scored_tokens": scored}
        return [
            Score("perplexity", math.exp(nll_sum / scored), details),
            Score("nll_sum", nll_sum),
            Score("scored_tokens", float(scored)),
        ]


class PerplexityTask:
    """Registered as ``perplexity``."""

    name: ClassVar[str] = "perplexity"
    description: ClassVar[str] = (
        "sliding-window perplexity of a text (window and stride), with exact nll sums"
    )
    params_type: ClassVar[type] = TextWindowParams
    file_params: ClassVar[tuple[str, ...]] = ("text",)

    def parse_params(self, params: dict[str, Any]) -> TextWindowParams:
        return parse_params(TextWindowParams, params, self.name)

    def prepare(self, model: Any, tokenizer: Any, params: TextWindowParams) -> PreparedPerplexity:
        return PreparedPerplexity(model, tokenizer, params)
