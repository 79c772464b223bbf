"""``choice``: multiple choice by log-likelihood, scored exactly as lm-evaluation-harness.

Each choice is scored as the continuation ``delimiter + choice`` of the item's context
(lm-eval's ``target_delimiter``, one space by default). ``acc`` counts items whose most
likely choice is the gold one; ``acc_norm`` does the same after dividing each
log-likelihood by the length of the choice text in characters. Both come with lm-eval's
standard error of the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tasks.workloads.accuracy import mean, mean_stderr, predictions
from tasks.workloads.base import QueryResult, Score
from tasks.workloads.items import ChoiceItem
from tasks.workloads.loglikelihood import Loglikelihood
from tasks.workloads.params import param, parse_params
from tasks.workloads.scored_items import ItemParams, PreparedItems


@dataclass(frozen=True)
class ChoiceParams(ItemParams):
    """Parameters of the ``choice`` task."""

    delimiter: str = param(" ", "text between the context and each choice (lm-eval's default)")


class PreparedChoice(PreparedItems):
    """The choice task bound to a model and its items."""

    task_name = "choice"

    def request(self, item: ChoiceItem) -> tuple[str, list[str]]:
        return item.context, [self.params.delimiter + choice for choice in item.choices]

    def record(self, item: ChoiceItem, results: list[Loglikelihood]) -> dict[str, Any]:
        logprobs = [r.logprob for r in results]
        pred, pred_norm = predictions(logprobs, item.choices)
        return {
            "gold": item.gold,
            "pred": pred,
            "pred_norm": pred_norm,
            "acc": int(pred == item.gold),
            "acc_norm": int(pred_norm == item.gold),
            "logprobs": logprobs,
            "greedy": [r.is_greedy for r in results],
        }

    def scores(self, results: Sequence[QueryResult]) -> list[Score]:
        """acc and acc_norm with their standard errors, and the item count."""
        records = self.item_records(results)
        acc = [float(r["acc"]) for r in records]
        acc_norm = [float(r["acc_norm"]) for r in records]
        details = {**self.data.details(), "delimiter": self.params.delimiter}
        scores = [
            Score("acc", mean(acc), details),
            Score("acc_norm", mean(acc_norm), {"items": len(records)}),
            Score("items", float(len(records))),
        ]
        for name, values in (("acc_stderr", acc), ("acc_norm_stderr", acc_norm)):
            stderr = mean_stderr(values)
            if stderr is not None:
                scores.append(Score(name, stderr))
        return scores


class ChoiceTask:
    """Registered as ``choice``."""

    name: ClassVar[str] = "choice"
    description: ClassVar[str] = (
        "multiple choice by log-likelihood: acc and acc_norm as lm-eval scores them "
        "(JSONL, hellaswag, arc_easy, arc_challenge, piqa; smoke set built in)"
    )
    params_type: ClassVar[type] = ChoiceParams
    file_params: ClassVar[tuple[str, ...]] = ("data",)

    def parse_params(self, params: dict[str, Any]) -> ChoiceParams:
        return parse_params(ChoiceParams, params, self.name)

    def prepare(self, model: Any, tokenizer: Any, params: ChoiceParams) -> PreparedChoice:
        return PreparedChoice(model, tokenizer, params)
