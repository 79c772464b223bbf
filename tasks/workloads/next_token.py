"""``next-token``: top-1 / top-5 next-token accuracy over a text, a cheap accuracy proxy.

Uses the same windows as ``perplexity`` (each scored token once, with as much context as
the window allows); each window is one query and records its hit counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from tasks.workloads.base import QueryResult, Score
from tasks.workloads.params import parse_params
from tasks.workloads.windows import PreparedWindows, TextWindowParams

TOP_K = 5


class PreparedNextToken(PreparedWindows):
    """The next-token task bound to a model and a tokenized text."""

    task_name = "next-token"

    def measure(self, log_probs: Any, targets: Any) -> dict[str, Any]:
        k = min(TOP_K, log_probs.shape[-1])
        # torch.topk breaks ties by index on CPU, so the counts are deterministic
        top = log_probs.topk(k, dim=-1).indices
        hits = top == targets.unsqueeze(1)
        return {"top1_hits": int(hits[:, 0].sum()), "top5_hits": int(hits.any(dim=1).sum())}

    def scores(self, results: Sequence[QueryResult]) -> list[Score]:
        """top1 and top5 accuracy, with their hit counts and the scored token count."""
        scored = int(self._total(results, "scored_tokens"))
        top1 = int(self._total(results, "top1_hits"))
        top5 = int(self._total(results, "top5_hits"))
        details = {**self._window_details(), "scored_tokens": scored}
        return [
            Score("top1", top1 / scored, {**details, "hits": top1}),
            Score("top5", top5 / scored, {**details, "hits": top5}),
            Score("top1_hits", float(top1)),
            Score("top5_hits", float(top5)),
            Score("scored_tokens", float(scored)),
        ]


class NextTokenTask:
    """Registered as ``next-token``."""

    name: ClassVar[str] = "next-token"
    description: ClassVar[str] = "top-1 / top-5 next-token accuracy over a text (same windows)"
    params_type: ClassVar[type] = TextWindowParams
    file_params: ClassVar[tuple[str, ...]] = ("text",)

    def parse_params(self, params: dict[str, Any]) -> TextWindowParams:
        return parse_params(TextWindowParams, params, self.name)

    def prepare(self, model: Any, tokenizer: Any, params: TextWindowParams) -> PreparedNextToken:
        return PreparedNextToken(model, tokenizer, params)
