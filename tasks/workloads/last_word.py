"""``last-word``: LAMBADA-style last-word prediction, scored as lm-eval's ``lambada_openai``.

Each passage is split at its last space: the words before it are the context, the last
word (after one space) the target. ``acc`` counts passages whose target is the greedy
continuation, token for token; ``word_perplexity`` (lm-eval's ``perplexity`` of this task)
is exp of minus the mean log-likelihood of the target word over passages: a per-word,
not a per-token, perplexity, named apart from the ``perplexity`` task's text perplexity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from tasks.workloads.accuracy import mean, mean_stderr, word_perplexity
from tasks.workloads.base import QueryResult, Score
from tasks.workloads.items import LastWordItem
from tasks.workloads.loglikelihood import Loglikelihood
from tasks.workloads.params import parse_params
from tasks.workloads.scored_items import ItemParams, PreparedItems


class PreparedLastWord(PreparedItems):
    """The last-word task bound to a model and its passages."""

    task_name = "last-word"

    def request(self, item: LastWordItem) -> tuple[str, list[str]]:
        return item.context, [item.target]

    def record(self, item: LastWordItem, results: list[Loglikelihood]) -> dict[str, Any]:
        (result,) = results
        return {
            "acc": int(result.is_greedy),
            "logprob": result.logprob,
            "target_tokens": result.tokens,
        }

    def scores(self, results: Sequence[QueryResult]) -> list[Score]:
        """acc with its standard error, the target word's perplexity, the item count."""
        records = self.item_records(results)
        acc = [float(r["acc"]) for r in records]
        logprobs = [float(r["logprob"]) for r in records]
        scores = [
            Score("acc", mean(acc), self.data.details()),
            Score("word_perplexity", word_perplexity(logprobs), {"items": len(records)}),
            Score("items", float(len(records))),
        ]
        stderr = mean_stderr(acc)
        if stderr is not None:
            scores.append(Score("acc_stderr", stderr))
        return scores


class LastWordTask:
    """Registered as ``last-word``."""

    name: ClassVar[str] = "last-word"
    description: ClassVar[str] = (
        "LAMBADA-style last-word accuracy (greedy) and the word's perplexity, as lm-eval's "
        "lambada_openai (JSONL, lambada_openai; smoke set built in)"
    )
    params_type: ClassVar[type] = ItemParams
    file_params: ClassVar[tuple[str, ...]] = ("data",)

    def parse_params(self, params: dict[str, Any]) -> ItemParams:
        return parse_params(ItemParams, params, self.name)

    def prepare(self, model: Any, tokenizer: Any, params: ItemParams) -> PreparedLastWord:
        return PreparedLastWord(model, tokenizer, params)
