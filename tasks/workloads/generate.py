"""``generate``: the energy/latency query, greedy decoding of a fixed number of tokens.

Every query decodes exactly ``max_new_tokens`` new tokens (end-of-sequence is suppressed
until then and decoding stops right there), so every variant of a model does the same
work whatever it generates. Greedy, with the model's KV cache. Query ``i`` uses prompts
``i * batch_size .. (i + 1) * batch_size - 1`` of the prompt set, cycling through it, so
any number of queries is deterministic. Per query: prompt and generated token counts,
time to first token (prefill plus the first decoding step), latency and the sha256 of
the generated text, which shows when compression changes the output.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tasks.errors import TaskError
from tasks.models import model_context
from tasks.workloads.base import QueryResult, Score
from tasks.workloads.params import param, parse_params
from tasks.workloads.sources import load_prompts

#: separates the texts of one batch before hashing
_BATCH_SEPARATOR = "\x1e"


@dataclass(frozen=True)
class GenerateParams:
    """Parameters of the ``generate`` task."""

    prompts: str = param(
        "builtin",
        "'builtin', a file (one prompt a line, or JSONL with a "
        "'prompt' field), or hf:DATASET[:CONFIG[:SPLIT]]",
    )
    num_queries: int | None = param(
        None,
        "queries per repetition, cycling through the prompts (None: one pass over them)",
        minimum=1,
    )
    max_new_tokens: int = param(32, "tokens every query generates (both min and max)", minimum=1)
    chat_template: bool | None = param(
        None, "wrap prompts in the tokenizer's chat template (None: when it has one)"
    )
    batch_size: int = param(1, "prompts per query (left-padded)", minimum=1)
    seed: int = param(0, "torch seed set before every query (decoding is greedy)")


def output_sha256(texts: Sequence[str]) -> str:
    """The hash recorded for the generated text(s) of one query."""
    return hashlib.sha256(_BATCH_SEPARATOR.join(texts).encode("utf-8")).hexdigest()


class _FirstTokenClock:
    """A stopping criterion that never stops, and notes when the first new token exists.

    Generation calls its stopping criteria once right after each new token is appended,
    so the first call marks the end of prefill plus the first decoding step.
    """

    def __init__(self) -> None:
        self.t_first: float | None = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.t_first is None:
            self.t_first = time.monotonic()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class PreparedGenerate:
    """The generate task bound to a model, a tokenizer and tokenized prompts."""

    def __init__(self, model: Any, tokenizer: Any, params: GenerateParams) -> None:
        from transformers import GenerationConfig

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.params = params
        prompts = load_prompts(params.prompts)
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if params.chat_template and not has_template:
            raise TaskError(
                "task generate: chat_template=true but the tokenizer has no chat template",
                hint="set chat_template=false for base models",
            )
        self.use_chat_template = (
            has_template if params.chat_template is None else params.chat_template
        )
        self.prompt_ids = [self._encode(p) for p in prompts]
        longest = max(len(ids) for ids in self.prompt_ids) + params.max_new_tokens
        context = model_context(model)
        if context is not None and longest > context:
            raise TaskError(
                f"task generate: the longest prompt plus max_new_tokens is {longest} "
                f"tokens, more than the model's context of {context}",
                hint="use shorter prompts or a smaller max_new_tokens",
            )
        eos = getattr(model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = (eos[0] if isinstance(eos, list) else eos) or 0
        self.pad_token_id = pad
        self.generation_config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            min_new_tokens=params.max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        passes = -(-len(self.prompt_ids) // params.batch_size)
        self._num_queries = params.num_queries or passes

    def _encode(self, prompt: str) -> list[int]:
        if not self.use_chat_template:
            return list(self.tokenizer(prompt)["input_ids"])
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        # the template already holds the special tokens it wants
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def num_queries(self) -> int:
        """Queries per repetition."""
        return self._num_queries

    def prompt_indices(self, index: int) -> list[int]:
        """Which prompts query ``index`` uses."""
        size = self.params.batch_size
        return [(index * size + j) % len(self.prompt_ids) for j in range(size)]

    def run_query(self, index: int) -> QueryResult:
        """Generate for query ``index``; timing covers ``model.generate`` only."""
        import torch
        from transformers import StoppingCriteriaList

        if not 0 <= index < self._num_queries:
            raise TaskError(
                f"task generate: query {index} does not exist (0..{self._num_queries - 1})"
            )
        chosen = self.prompt_indices(index)
        rows = [self.prompt_ids[i] for i in chosen]
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([[self.pad_token_id] * (width - len(r)) + r for r in rows])
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        clock = _FirstTokenClock()
        torch.manual_seed(self.params.seed)
        with torch.inference_mode():
            t_start = time.monotonic()
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=self.generation_config,
                stopping_criteria=StoppingCriteriaList([clock]),
            )
            t_end = time.monotonic()
        new_tokens = output[:, width:]
        texts = [self.tokenizer.decode(row, skip_special_tokens=False) for row in new_tokens]
        return QueryResult(
            index=index,
            t_start=t_start,
            t_end=t_end,
            prompt_tokens=sum(len(r) for r in rows),
            output_tokens=int(new_tokens.numel()),
            ttft_s=None if clock.t_first is None else clock.t_first - t_start,
            output_sha256=output_sha256(texts),
            # the first token of each row comes out of the prefill step (inside ttft_s)
            decode_tokens=int(new_tokens.numel()) - int(new_tokens.shape[0]),
            extra={"prompt_indices": chosen, "new_tokens_per_row": int(new_tokens.shape[1])},
        )

    def scores(self, results: Sequence[QueryResult]) -> list[Score]:
        """Totals of one repetition; details carry a hash over all outputs in query order."""
        ordered = sorted(results, key=lambda r: r.index)
        generated = sum(r.output_tokens for r in ordered)
        busy_s = sum(r.latency_s for r in ordered)
        combined = hashlib.sha256("".join(r.output_sha256 or "" for r in ordered).encode())
        details = {
            "queries": len(ordered),
            "outputs_sha256": combined.hexdigest(),
            "chat_template": self.use_chat_template,
            "max_new_tokens": self.params.max_new_tokens,
        }
        scores = [Score("generated_tokens", float(generated), details)]
        if busy_s > 0:
            scores.append(Score("tokens_per_s", generated / busy_s))
        return scores


class GenerateTask:
    """Registered as ``generate``."""

    name: ClassVar[str] = "generate"
    description: ClassVar[str] = (
        "greedy generation of a fixed number of tokens per prompt "
        "(latency, time to first token, output hash)"
    )
    params_type: ClassVar[type] = GenerateParams
    file_params: ClassVar[tuple[str, ...]] = ("prompts",)

    def parse_params(self, params: dict[str, Any]) -> GenerateParams:
        return parse_params(GenerateParams, params, self.name)

    def prepare(self, model: Any, tokenizer: Any, params: GenerateParams) -> PreparedGenerate:
        return PreparedGenerate(model, tokenizer, params)
