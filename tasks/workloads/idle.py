"""``idle``: a board's idle power over a given duration, with no model at all.

Each query is a quiet interval of ``query_seconds`` (the agent sleeps), so the agent's
windows integrate the meter over them exactly as over real queries: energy and power per
window, with the same flags for under-resolved meters. No model is loaded and neither
torch nor transformers is imported, so labs can characterise boards and meters with it,
and many devices can run it side by side without competing for the CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tasks.workloads.base import QueryResult, Score
from tasks.workloads.params import param, parse_params


@dataclass(frozen=True)
class IdleParams:
    """Parameters of the ``idle`` task."""

    seconds: float = param(10.0, "how long one repetition measures (seconds)", minimum=0.1)
    query_seconds: float = param(
        1.0, "length of one quiet interval, the unit of a query (seconds)", minimum=0.05
    )

    @property
    def num_queries(self) -> int:
        return max(1, math.ceil(self.seconds / self.query_seconds - 1e-9))


class PreparedIdle:
    """The idle task: ``num_queries`` quiet intervals that add up to ``seconds``."""

    def __init__(self, params: IdleParams) -> None:
        self.params = params

    def num_queries(self) -> int:
        return self.params.num_queries

    def run_query(self, index: int) -> QueryResult:
        """Stay quiet for one interval (the last one is shortened to end at ``seconds``)."""
        p = self.params
        length = min(p.query_seconds, p.seconds - index * p.query_seconds)
        t0 = time.monotonic()
        deadline = t0 + max(length, 0.0)
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(left)
        return QueryResult(
            index=index, t_start=t0, t_end=time.monotonic(), prompt_tokens=0, output_tokens=0
        )

    def scores(self, results: Sequence[QueryResult]) -> list[Score]:
        """The measured quiet time of the repetition (its energy comes from the windows)."""
        measured = sum(r.latency_s for r in results)
        return [Score("idle_seconds", measured, {"intervals": len(results)})]


class IdleTask:
    """Registered as ``idle``."""

    name: ClassVar[str] = "idle"
    description: ClassVar[str] = "idle power over a duration; no model, no torch"
    params_type: ClassVar[type] = IdleParams
    file_params: ClassVar[tuple[str, ...]] = ()
    #: the agent neither loads the model nor imports torch for a job of such tasks only
    needs_model: ClassVar[bool] = False

    def parse_params(self, params: dict[str, Any]) -> IdleParams:
        return parse_params(IdleParams, params, self.name)

    def prepare(self, model: Any, tokenizer: Any, params: IdleParams) -> PreparedIdle:
        return PreparedIdle(params)

    def estimate_queries(self, params: dict[str, Any]) -> int:
        """Queries one repetition runs (for the progress bars)."""
        return self.parse_params(params).num_queries
