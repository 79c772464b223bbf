"""What the ``choice`` and ``last-word`` tasks share: parameters, placement, timing.

Both score a list of items by log-likelihood, one item per query, with the scoring of
:mod:`tasks.workloads.loglikelihood`; each query records its per-item decisions so that
a reader can check them item by item, and the scores record which items were scored.

``on`` says where a quality task runs: ``device`` (the default, on every selected board)
or ``controller`` (once per variant, on the controller, with the artifact the boards use;
the orchestrator stores it under the device named ``controller``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tasks.errors import TaskError
from tasks.workloads.base import QueryResult
from tasks.workloads.items import ItemSet, load_items
from tasks.workloads.loglikelihood import LoglikelihoodScorer
from tasks.workloads.params import check_placement, param


@dataclass(frozen=True)
class ItemParams:
    """Parameters of the tasks that score items by log-likelihood."""

    data: str = param(
        "smoke",
        "'smoke' (built-in smoke set, not comparable to published numbers), a JSONL file, "
        "or a dataset name",
    )
    limit: int | None = param(None, "score only N items (None: all)", minimum=1)
    seed: int | None = param(
        None, "with limit: a seeded random subset instead of the first N items"
    )
    batch_size: int | None = param(
        None, "continuations per forward pass (None: all of an item's at once)", minimum=1
    )
    on: str = param("device", "where it runs: device (each board) or controller (once)")

    def __post_init__(self) -> None:
        check_placement(self.on)
        if self.seed is not None and self.limit is None:
            raise TaskError(
                "seed chooses a random subset and needs limit",
                hint="add limit=N, or drop seed to score every item",
            )


class PreparedItems:
    """Items loaded and tokenized once, bound to a model; one item per query."""

    task_name = "items"

    def __init__(self, model: Any, tokenizer: Any, params: ItemParams) -> None:
        self.params = params
        self.data: ItemSet = load_items(self.task_name, params.data, params.limit, params.seed)
        self.scorer = LoglikelihoodScorer(model, tokenizer, batch_size=params.batch_size)

    def num_queries(self) -> int:
        """One query per item."""
        return len(self.data.items)

    def run_query(self, index: int) -> QueryResult:
        """Score item ``index``; the timing covers the forward passes and the scoring."""
        if not 0 <= index < len(self.data.items):
            raise TaskError(
                f"task {self.task_name}: query {index} does not exist "
                f"(0..{len(self.data.items) - 1})"
            )
        item = self.data.items[index]
        t_start = time.monotonic()
        extra, tokens = self.score_item(item)
        t_end = time.monotonic()
        return QueryResult(
            index=index,
            t_start=t_start,
            t_end=t_end,
            prompt_tokens=tokens,
            output_tokens=0,
            extra={"doc_id": item.doc_id, **extra},
        )

    def score_item(self, item: Any) -> tuple[dict[str, Any], int]:
        """The per-item record and the number of tokens scored for one item."""
        raise NotImplementedError

    def _in_order(self, results: Sequence[QueryResult]) -> list[QueryResult]:
        """The results of one repetition by item, which must hold every item once."""
        seen = sorted(r.index for r in results)
        if seen != list(range(len(self.data.items))):
            raise TaskError(
                f"task {self.task_name}: scores need every item exactly once "
                f"(expected {len(self.data.items)}, got {len(seen)})"
            )
        return sorted(results, key=lambda r: r.index)
