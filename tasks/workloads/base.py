"""The workload interface the agent runs and the reports read.

A task turns a loaded model into a deterministic list of *queries* (units of work the
agent times and measures one by one: a generation, a perplexity window, ...) and turns
the finished queries into *scores*. It knows nothing of meters or energy: the agent
joins the timestamps of each :class:`QueryResult` (``time.monotonic()``, the same clock
as the power sampler) with the power samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class QueryResult:
    """One finished query. Times are ``time.monotonic()`` seconds."""

    index: int
    t_start: float
    t_end: float
    prompt_tokens: int
    output_tokens: int
    ttft_s: float | None = None
    output_sha256: str | None = None
    #: tokens generated after the first one (the decode phase, from ``ttft_s`` to the
    #: end); None for tasks without a prefill/decode split
    decode_tokens: int | None = None
    #: task-specific exact sums (e.g. ``nll_sum``, ``scored_tokens``, ``top1_hits``)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def latency_s(self) -> float:
        return self.t_end - self.t_start

    @property
    def tokens_per_s(self) -> float | None:
        if self.output_tokens <= 0 or self.latency_s <= 0:
            return None
        return self.output_tokens / self.latency_s

    @property
    def decode_s_per_token(self) -> float | None:
        """Seconds per decoding step after the first token; a step gives every sequence
        of a batched query its next token (``extra['new_tokens_per_row']``). None without
        a time to first token or with fewer than two tokens per sequence."""
        per_row = self.extra.get("new_tokens_per_row")
        steps = (int(per_row) if per_row else self.output_tokens) - 1
        if self.ttft_s is None or steps < 1:
            return None
        return max(self.latency_s - self.ttft_s, 0.0) / steps


@dataclass(frozen=True)
class Score:
    """A task metric over all queries of one repetition (e.g. perplexity)."""

    metric: str
    value: float
    details: dict[str, Any] = field(default_factory=dict)


class PreparedTask(Protocol):
    """A task bound to a model, tokenizer and parameters."""

    def num_queries(self) -> int:
        """How many queries one repetition runs."""

    def run_query(self, index: int) -> QueryResult:
        """Run query ``index`` (0-based) and return its timed result."""

    def scores(self, results: Sequence[QueryResult]) -> list[Score]:
        """Combine the results of one repetition into task metrics."""


class Task(Protocol):
    """A registered workload. Parameters are a frozen dataclass of typed fields."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: the frozen dataclass :meth:`parse_params` returns (``tslm-fleet tasks`` lists its fields)
    params_type: ClassVar[type]
    #: parameters whose value may name a file on the controller, which is then pushed to
    #: the device with the job
    file_params: ClassVar[tuple[str, ...]]

    def parse_params(self, params: dict[str, Any]) -> Any:
        """Validate raw parameters (from the CLI or a job spec) into the params dataclass."""

    def prepare(self, model: Any, tokenizer: Any, params: Any) -> PreparedTask:
        """Bind the task to a loaded model; load prompts or text here, not in run_query."""
