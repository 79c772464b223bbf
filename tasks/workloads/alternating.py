"""``alternating``: queries that alternate between heavy and light load, to check energy.

Even queries are heavy: forward passes of the model over a fixed prompt, back to back,
for ``heavy_s`` seconds. Odd queries are light: the device sleeps ``light_s`` seconds.
The power changes at every query boundary, so a window or query whose edges are
misplaced against the meter's samples (a clock offset, meter lag, an interpolation slip)
gets a wrong energy that neighbouring queries do not cancel. Its score is the number of
forward passes (a throughput, not a quality).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tasks.workloads.base import QueryResult, Score
from tasks.workloads.params import param, parse_params


@dataclass(frozen=True)
class AlternatingParams:
    queries: int = param(8, "queries per repetition (heavy, light, heavy, ...)", minimum=1)
    heavy_s: float = param(
        1.0, "seconds of back-to-back forward passes per heavy query", minimum=0.01
    )
    light_s: float = param(1.0, "seconds of sleep per light query", minimum=0.01)
    prompt_tokens: int = param(32, "tokens in the prompt of a forward pass", minimum=1)


class PreparedAlternating:
    """The alternating task bound to a model."""

    def __init__(self, model: Any, tokenizer: Any, params: AlternatingParams) -> None:
        import torch

        self.model = model
        self.params = params
        vocab = int(getattr(model.config, "vocab_size", 0) or len(tokenizer))
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randint(0, vocab, (1, params.prompt_tokens), generator=generator)

    def num_queries(self) -> int:
        return self.params.queries

    def run_query(self, index: int) -> QueryResult:
        import torch

        heavy = index % 2 == 0
        passes = 0
        t_start = time.monotonic()
        if heavy:
            deadline = t_start + self.params.heavy_s
            with torch.inference_mode():
                while time.monotonic() < deadline:
                    self.model(input_ids=self.inputs, use_cache=False)
                    passes += 1
        else:
            time.sleep(self.params.light_s)
        t_end = time.monotonic()
        return QueryResult(
            index=index,
            t_start=t_start,
            t_end=t_end,
            prompt_tokens=self.params.prompt_tokens if heavy else 0,
            output_tokens=0,
            extra={"load": "heavy" if heavy else "light", "passes": passes},
        )

    def scores(self, results: Sequence[QueryResult]) -> list[Score]:
        passes = sum(int(r.extra["passes"]) for r in results)
        heavy_s = sum(r.latency_s for r in results if r.extra["load"] == "heavy")
        return [
            Score("passes", float(passes)),
            Score("passes_per_s", passes / heavy_s if heavy_s > 0 else 0.0),
        ]


class AlternatingTask:
    """Registered as ``alternating``."""

    name: ClassVar[str] = "alternating"
    description: ClassVar[str] = (
        "heavy and light queries in turn (forward passes, then sleep): checks energy edges"
    )
    params_type: ClassVar[type] = AlternatingParams
    file_params: ClassVar[tuple[str, ...]] = ()

    def parse_params(self, params: dict[str, Any]) -> AlternatingParams:
        return parse_params(AlternatingParams, params, self.name)

    def prepare(self, model: Any, tokenizer: Any, params: AlternatingParams) -> PreparedAlternating:
        return PreparedAlternating(model, tokenizer, params)
