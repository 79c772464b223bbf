"""Sliding windows over a tokenized text, shared by ``perplexity`` and ``next-token``.

The plan is the standard strided evaluation of causal LMs (the Hugging Face perplexity
guide): windows of ``window`` tokens start every ``stride`` tokens; each window scores only
the tokens the previous windows have not scored, so every token is scored once, with as
much left context as the window allows. A token can only be scored with at least one
token before it in the same window: the first token of the text is never scored, and with
``stride == window`` (disjoint windows) neither is the first token of each window.
Each window is one query.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tasks.data import evaluation_texts
from tasks.errors import TaskError
from tasks.models import model_context
from tasks.workloads.base import QueryResult
from tasks.workloads.params import check_placement, param
from tasks.workloads.sources import load_text


@dataclass(frozen=True)
class TextWindowParams:
    """Parameters of the tasks that score a text in sliding windows."""

    text: str = param(
        "builtin",
        f"'builtin' (the default text), builtin:NAME ({', '.join(evaluation_texts())}), "
        "a UTF-8 text file, or hf:DATASET[:CONFIG[:SPLIT]]",
    )
    window: int = param(1024, "tokens the model sees per window (capped at its context)", minimum=2)
    stride: int | None = param(
        None,
        "tokens between window starts (None: half the window); "
        "each window scores what the previous ones did not",
        minimum=1,
    )
    max_tokens: int | None = param(
        None, "score only the first N tokens of the text (None: all)", minimum=2
    )
    on: str = param("device", "where it runs: device (each board) or controller (once)")

    def __post_init__(self) -> None:
        check_placement(self.on)
        if self.stride is not None and self.stride > self.window:
            raise TaskError(
                f"stride {self.stride} is larger than window {self.window}: "
                "tokens between windows would never be scored",
                hint="choose stride <= window (half the window is usual)",
            )


@dataclass(frozen=True)
class Window:
    """Token positions ``[begin, end)`` go into the model; ``[score_from, end)`` are scored."""

    index: int
    begin: int
    end: int
    score_from: int

    @property
    def input_tokens(self) -> int:
        return self.end - self.begin

    @property
    def scored_tokens(self) -> int:
        return self.end - self.score_from


def plan_windows(num_tokens: int, window: int, stride: int) -> list[Window]:
    """The windows of the strided evaluation of ``num_tokens`` tokens.

    Windows that would score nothing (a trailing single token after disjoint windows) are
    left out, so every query does some scoring.
    """
    if window < 2 or not 1 <= stride <= window:
        raise TaskError(f"invalid window plan: window {window}, stride {stride}")
    windows: list[Window] = []
    prev_end = 0
    for begin in range(0, num_tokens, stride):
        end = min(begin + window, num_tokens)
        score_from = max(prev_end, begin + 1)
        if end > score_from:
            windows.append(Window(len(windows), begin, end, score_from))
        prev_end = end
        if end == num_tokens:
            break
    return windows


class PreparedWindows:
    """A text tokenized once and split into windows, bound to a model.

    Subclasses turn the log-probabilities of one window into their query's exact sums
    (:meth:`measure`) and the sums of all windows into scores.
    """

    task_name = "windows"

    def __init__(self, model: Any, tokenizer: Any, params: TextWindowParams) -> None:
        import torch

        ids = tokenizer(load_text(params.text), verbose=False)["input_ids"]
        if params.max_tokens is not None:
            ids = ids[: params.max_tokens]
        if len(ids) < 2:
            raise TaskError(
                f"task {self.task_name}: text {params.text!r} has {len(ids)} "
                "token(s); at least 2 are needed to score anything"
            )
        context = model_context(model)
        self.window = min(params.window, context) if context else params.window
        self.stride = min(params.stride or max(1, self.window // 2), self.window)
        self.params = params
        self.model = model.eval()
        self.ids = torch.tensor(ids, dtype=torch.long)
        self.windows = plan_windows(len(ids), self.window, self.stride)
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    def num_queries(self) -> int:
        """One query per window."""
        return len(self.windows)

    def _forward(self, index: int) -> tuple[Any, Any]:
        """Log-probabilities (scored x vocab, float32) and the scored token ids."""
        import torch

        win = self.windows[index]
        inputs = self.ids[win.begin : win.end].unsqueeze(0)
        first = win.score_from - win.begin  # the first scored token, within the window
        with torch.inference_mode():
            # the logits at position p predict the token at p + 1: positions first - 1 to
            # the end are needed (the last one predicts past the window and is dropped)
            if self._keeps_logits:  # skip the LM head where nothing is scored
                logits = self.model(
                    input_ids=inputs, use_cache=False, logits_to_keep=win.scored_tokens + 1
                ).logits[0]
            else:
                logits = self.model(input_ids=inputs, use_cache=False).logits[0, first - 1 :]
            predicted = logits[:-1].float()
            return torch.log_softmax(predicted, dim=-1), inputs[0, first:]

    def _window_details(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "stride": self.stride,
            "windows": len(self.windows),
            "text_tokens": int(self.ids.numel()),
        }

    def run_query(self, index: int) -> QueryResult:
        """Score window ``index``; the timing covers the forward pass and the scoring."""
        if not 0 <= index < len(self.windows):
            raise TaskError(
                f"task {self.task_name}: query {index} does not exist (0..{len(self.windows) - 1})"
            )
        win = self.windows[index]
        t_start = time.monotonic()
        log_probs, targets = self._forward(index)
        sums = self.measure(log_probs, targets)
        t_end = time.monotonic()
        return QueryResult(
            index=index,
            t_start=t_start,
            t_end=t_end,
            prompt_tokens=win.input_tokens,
            output_tokens=0,
            extra={"scored_tokens": win.scored_tokens, **sums},
        )

    def measure(self, log_probs: Any, targets: Any) -> dict[str, Any]:
        """Exact per-window sums from the window's log-probabilities."""
        raise NotImplementedError

    def _total(self, results: Sequence[QueryResult], key: str) -> Any:
        """Sum of ``extra[key]`` over one repetition, which must hold every window once."""
        seen = sorted(r.index for r in results)
        if seen != list(range(len(self.windows))):
            raise TaskError(
                f"task {self.task_name}: scores need every window exactly once "
                f"(expected {len(self.windows)}, got indices {seen[:10]}...)"
            )
        return sum(r.extra[key] for r in sorted(results, key=lambda r: r.index))
