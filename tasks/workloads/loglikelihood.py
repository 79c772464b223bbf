"""Log-likelihoods of continuations, tokenized and scored as lm-evaluation-harness does.

The definitions follow lm-eval's Hugging Face model (``HFLM``) for causal models:

* a context's trailing whitespace moves to the start of the continuation;
* the continuation's tokens are those of ``context + continuation`` after as many tokens
  as the context alone encodes to, and the model reads the context's own tokens followed
  by them (so a merge across the boundary is not re-tokenized);
* an empty context is replaced by the prefix token (BOS, else EOS);
* strings are encoded with the tokenizer's default special tokens, except that a string
  already starting with the prefix token's text gets none added;
* a sequence longer than the model's context keeps its last ``max_length + 1`` tokens;
* a continuation is *greedy* when every one of its tokens is the argmax at its position.

What differs is only the arithmetic's order, not its result: the context shared by all
continuations of an item is encoded once and its key/value cache reused for a batch of
continuations (lm-eval runs each context + continuation in full), and the LM head runs
only where a continuation token is predicted.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tasks.errors import TaskError

#: lm-eval's fallback when neither the model config nor the tokenizer gives a length
DEFAULT_MAX_LENGTH = 2048
#: tokenizers report this (or larger) when they have no real limit
_TOKENIZER_INFINITY = 1_000_000_000_000_000_019_884_624_838_656


@dataclass(frozen=True)
class EncodedRequest:
    """One context and the continuations to score after it, as token ids."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Loglikelihood:
    """The log-probability (nats) of one continuation given its context."""

    logprob: float
    is_greedy: bool
    tokens: int


def prefix_token_id(tokenizer: Any) -> int:
    """The token standing in for an empty context: BOS, else EOS (as lm-eval)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos if bos is not None else tokenizer.eos_token_id


def encode(tokenizer: Any, text: str, *, add_special_tokens: bool | None = None) -> list[int]:
    """Token ids of ``text`` with lm-eval's special-token rule (see the module docstring)."""
    kwargs: dict[str, Any] = {}
    if add_special_tokens is not None:
        kwargs["add_special_tokens"] = add_special_tokens
    elif text.startswith(tokenizer.decode(prefix_token_id(tokenizer))):
        kwargs["add_special_tokens"] = False
    return list(tokenizer.encode(text, **kwargs))


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) of one request, split as lm-eval splits them."""
    if context == "":
        cont = encode(tokenizer, continuation, add_special_tokens=False)
        prefix = prefix_token_id(tokenizer)
        if cont and cont[0] == prefix:
            return cont[:1], cont[1:]
        return [prefix], cont
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = encode(tokenizer, context + continuation)
    context_ids = encode(tokenizer, context)
    return context_ids, whole[len(context_ids) :]


def encode_requests(
    tokenizer: Any, context: str, continuations: Sequence[str]
) -> list[tuple[EncodedRequest, list[int]]]:
    """The continuations of one context grouped by their context tokens.

    Returns (request, positions of its continuations in ``continuations``) pairs. A
    non-empty context gives one group; with an empty context a continuation that starts
    with the prefix token keeps it as its context, so it may form a group of its own.
    """
    groups: dict[tuple[int, ...], list[tuple[int, tuple[int, ...]]]] = {}
    for i, continuation in enumerate(continuations):
        ctx, cont = encode_pair(tokenizer, context, continuation)
        groups.setdefault(tuple(ctx), []).append((i, tuple(cont)))
    return [
        (EncodedRequest(ctx, tuple(c for _, c in members)), [i for i, _ in members])
        for ctx, members in groups.items()
    ]


def max_length(model: Any, tokenizer: Any) -> int:
    """The longest input the model is given, found as lm-eval finds it."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, key, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < _TOKENIZER_INFINITY:
        return int(limit)
    return DEFAULT_MAX_LENGTH


class LoglikelihoodScorer:
    """Scores encoded requests on one causal LM (CPU, inference mode)."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length(model, tokenizer)
        self.batch_size = batch_size
        self.pad_id = 0
        params = inspect.signature(model.forward).parameters
        self._keeps_logits = "logits_to_keep" in params
        #: the keyword of the key/value cache (``cache`` from transformers 5 on), if any
        self.cache_arg = next((a for a in ("cache", "past_key_values") if a in params), None)

    def loglikelihoods(self, context: str, continuations: Sequence[str]) -> list[Loglikelihood]:
        """The log-likelihood of each continuation after ``context``, in order."""
        results: list[Loglikelihood | None] = [None] * len(continuations)
        for request, positions in encode_requests(self.tokenizer, context, continuations):
            for i, result in zip(positions, self.score(request), strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def check(self, request: EncodedRequest) -> None:
        """Refuse continuations lm-eval could not score: empty, or longer than the model."""
        for cont in request.continuations:
            if not cont:
                raise TaskError("a continuation encodes to no tokens")
            if len(cont) > self.max_length:
                raise TaskError(
                    f"a continuation of {len(cont)} tokens exceeds the model's "
                    f"{self.max_length}-token context"
                )

    def score(self, request: EncodedRequest) -> list[Loglikelihood]:
        """The log-likelihood of every continuation of ``request``, in order."""
        self.check(request)
        longest = max(len(c) for c in request.continuations)
        too_long = len(request.context) + longest > self.max_length + 1
        # one continuation gains nothing from a cache: one forward pass scores it
        if too_long or len(request.continuations) == 1 or self.cache_arg is None:
            return self._score_full(request)
        return self._score_shared(request)

    # ------------------------------------------------------------------ shared context

    def _score_shared(self, request: EncodedRequest) -> list[Loglikelihood]:
        """The context once, then its continuations as one batch from its cache.

        With ``batch_size`` smaller than the item's continuations, each batch encodes the
        context again (a cache is extended in place by the pass that reads it).
        """
        import torch

        results: list[Loglikelihood | None] = [None] * len(request.continuations)
        longer = [i for i, c in enumerate(request.continuations) if len(c) > 1]
        with torch.inference_mode():
            first, cache = self._encode_context(request.context)
            if cache is None:
                return self._score_full(request)
            for i, cont in enumerate(request.continuations):
                if len(cont) == 1:
                    results[i] = _result(first.unsqueeze(0), cont)
            for n, batch in enumerate(_batches(longer, self.batch_size)):
                if n:
                    _, cache = self._encode_context(request.context)
                conts = [request.continuations[i] for i in batch]
                rest = self._continue(cache, conts)
                for row, (i, cont) in enumerate(zip(batch, conts, strict=True)):
                    logits = torch.cat([first.unsqueeze(0), rest[row, : len(cont) - 1]])
                    results[i] = _result(logits, cont)
        return [r for r in results if r is not None]

    def _encode_context(self, context_ids: tuple[int, ...]) -> tuple[Any, Any]:
        """(logits after the context's last token, its key/value cache or None)."""
        import torch

        kwargs = {"logits_to_keep": 1} if self._keeps_logits else {}
        context = torch.tensor([context_ids], dtype=torch.long)
        out = self.model(input_ids=context, use_cache=True, **kwargs)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        return out.logits[0, -1].float(), cache

    def _continue(self, cache: Any, conts: list[tuple[int, ...]]) -> Any:
        """Logits (batch, positions, vocab) after each continuation's tokens but its last."""
        import torch

        width = max(len(c) for c in conts) - 1
        rows = [list(c[:-1]) + [self.pad_id] * (width - len(c) + 1) for c in conts]
        # right padding needs no mask in a causal model: a pad only follows what is scored
        out = self.model(
            input_ids=torch.tensor(rows, dtype=torch.long),
            use_cache=True,
            **{self.cache_arg: _repeat_cache(cache, len(conts))},
        )
        return out.logits.float()

    # ------------------------------------------------------------------ full sequences

    def _score_full(self, request: EncodedRequest) -> list[Loglikelihood]:
        """lm-eval's own layout: each (context + continuation)[:-1], left-truncated."""
        import torch

        results = []
        indices = list(range(len(request.continuations)))
        with torch.inference_mode():
            for batch in _batches(indices, self.batch_size):
                inputs = []
                for i in batch:
                    cont = request.continuations[i]
                    inputs.append(
                        (list(request.context) + list(cont))[-(self.max_length + 1) :][:-1]
                    )
                width = max(len(x) for x in inputs)
                padded = [x + [self.pad_id] * (width - len(x)) for x in inputs]
                kwargs = {}
                if len(batch) == 1 and self._keeps_logits:  # the head only where scored
                    kwargs["logits_to_keep"] = len(request.continuations[batch[0]])
                logits = self.model(
                    input_ids=torch.tensor(padded, dtype=torch.long), use_cache=False, **kwargs
                ).logits.float()
                for row, i in enumerate(batch):
                    cont = request.continuations[i]
                    end = logits.shape[1] if kwargs else len(inputs[row])
                    results.append(_result(logits[row, end - len(cont) : end], cont))
        return results


def _result(logits: Any, cont: Sequence[int]) -> Loglikelihood:
    """Sum of log-probabilities of ``cont`` under ``logits`` (one row per token)."""
    import torch

    log_probs = torch.log_softmax(logits, dim=-1)
    target = torch.tensor(cont, dtype=torch.long)
    picked = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
    greedy = bool((log_probs.argmax(dim=-1) == target).all())
    return Loglikelihood(float(picked.double().sum()), greedy, len(cont))


def _batches(indices: list[int], size: int | None) -> list[list[int]]:
    if not indices:
        return []
    step = size or len(indices)
    return [indices[i : i + step] for i in range(0, len(indices), step)]


def _repeat_cache(cache: Any, count: int) -> Any:
    """A context's batch-1 key/value cache repeated ``count`` times along the batch:
    in place for a cache object, as a copy for the legacy tuple per layer."""
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(count)
        return cache
    return tuple(tuple(t.repeat_interleave(count, dim=0) for t in layer) for layer in cache)
