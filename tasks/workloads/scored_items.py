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
from tasks.workloads.grouped import score_group
from tasks.workloads.item_sources import load_items
from tasks.workloads.items import ItemSet
from tasks.workloads.loglikelihood import Loglikelihood, LoglikelihoodScorer, encode_requests
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
    items_per_query: int = param(
        8,
        "items scored together as one query: their contexts in one batch, then all "
        "their choices in one (lower it to save memory)",
        minimum=1,
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
    """Items loaded once and bound to a model; each query scores ``items_per_query`` of
    them, items of similar length together (the records say which, by ``doc_id``)."""

    task_name = "items"

    def __init__(self, model: Any, tokenizer: Any, params: ItemParams) -> None:
        self.params = params
        self.data: ItemSet = load_items(self.task_name, params.data, params.limit, params.seed)
        self.scorer = LoglikelihoodScorer(model, tokenizer)
        size = params.items_per_query
        # items of similar length share a query, so that little of its batches is padding
        items = sorted(self.data.items, key=self._length, reverse=True)
        self.groups = [items[i : i + size] for i in range(0, len(items), size)]

    def num_queries(self) -> int:
        """One query per group of ``items_per_query`` items."""
        return len(self.groups)

    def run_query(self, index: int) -> QueryResult:
        """Score the items of query ``index``; the timing covers tokenizing, the forward
        passes and the scoring."""
        if not 0 <= index < len(self.groups):
            raise TaskError(
                f"task {self.task_name}: query {index} does not exist (0..{len(self.groups) - 1})"
            )
        items = self.groups[index]
        t_start = time.monotonic()
        scored = self._score(items)
        records = [
            {"doc_id": item.doc_id, **self.record(item, results)}
            for item, results in zip(items, scored, strict=True)
        ]
        t_end = time.monotonic()
        return QueryResult(
            index=index,
            t_start=t_start,
            t_end=t_end,
            prompt_tokens=sum(r.tokens for results in scored for r in results),
            output_tokens=0,
            extra={"items": records},
        )

    def _score(self, items: Sequence[Any]) -> list[list[Loglikelihood]]:
        """Every item's continuations scored, all items' requests as one group."""
        requests, owners = [], []
        for k, item in enumerate(items):
            context, continuations = self.request(item)
            for request, positions in encode_requests(
                self.scorer.tokenizer, context, continuations
            ):
                requests.append(request)
                owners.append((k, positions))
        scored: list[list[Loglikelihood | None]] = [
            [None] * len(self.request(item)[1]) for item in items
        ]
        for (k, positions), results in zip(owners, score_group(self.scorer, requests), strict=True):
            for i, result in zip(positions, results, strict=True):
                scored[k][i] = result
        return [[r for r in row if r is not None] for row in scored]

    def _length(self, item: Any) -> tuple[int, int]:
        """(context, longest continuation) length in characters, to group similar items."""
        context, continuations = self.request(item)
        return len(context), max(len(c) for c in continuations)

    def request(self, item: Any) -> tuple[str, list[str]]:
        """(context, continuations) of one item."""
        raise NotImplementedError

    def record(self, item: Any, results: list[Loglikelihood]) -> dict[str, Any]:
        """What a query records about one of its items."""
        raise NotImplementedError

    def item_records(self, results: Sequence[QueryResult]) -> list[dict[str, Any]]:
        """The per-item records of one repetition in item order; every query exactly once."""
        seen = sorted(r.index for r in results)
        if seen != list(range(len(self.groups))):
            raise TaskError(
                f"task {self.task_name}: scores need every query exactly once "
                f"(expected {len(self.groups)}, got {len(seen)})"
            )
        records = [record for r in results for record in r.extra["items"]]
        return sorted(records, key=lambda record: record["doc_id"])
