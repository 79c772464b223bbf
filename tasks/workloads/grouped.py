"""Several items' requests scored in two forward passes: contexts, then continuations.

The contexts of a group of items run as one left-padded batch (attention mask and
position ids mark the padding) that keeps only the logits after each context's last
token; its key/value cache is then gathered once per continuation and every
continuation of every item runs as one right-padded batch from it. The arithmetic
changes order against lm-eval's one-sequence-per-request layout, not its definitions:
each continuation is still scored after its context's own tokens, with the same
positions.

A group falls back to item-by-item scoring where the model takes no cache, attention
mask or position ids, or where a request needs lm-eval's left truncation.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from tasks.workloads.loglikelihood import (
    EncodedRequest,
    Loglikelihood,
    LoglikelihoodScorer,
    _result,
)


def groupable(scorer: LoglikelihoodScorer) -> bool:
    """Whether the scorer's model takes what grouped scoring passes it."""
    params = inspect.signature(scorer.model.forward).parameters
    return scorer.cache_arg is not None and {"attention_mask", "position_ids"} <= set(params)


def score_group(
    scorer: LoglikelihoodScorer, requests: Sequence[EncodedRequest]
) -> list[list[Loglikelihood]]:
    """The log-likelihoods of every continuation of every request, request by request."""
    fits = all(
        len(r.context) + max(len(c) for c in r.continuations) <= scorer.max_length + 1
        for r in requests
    )
    if len(requests) < 2 or not fits or not groupable(scorer):
        return [scorer.score(r) for r in requests]
    for request in requests:  # the same checks as one request at a time
        scorer.check(request)
    import torch

    with torch.inference_mode():
        first, cache, lengths, mask = _contexts(scorer, requests)
        if cache is None:
            return [scorer.score(r) for r in requests]
        rows = [
            (b, j)
            for b, r in enumerate(requests)
            for j, cont in enumerate(r.continuations)
            if len(cont) > 1
        ]
        rest = _continuations(scorer, requests, rows, cache, lengths, mask) if rows else None
        at = {row: k for k, row in enumerate(rows)}
        out = []
        for b, request in enumerate(requests):
            scored = []
            for j, cont in enumerate(request.continuations):
                logits = first[b].unsqueeze(0)
                if len(cont) > 1:
                    logits = torch.cat([logits, rest[at[(b, j)], : len(cont) - 1]])
                scored.append(_result(logits, cont))
            out.append(scored)
    return out


def _contexts(scorer: LoglikelihoodScorer, requests: Sequence[EncodedRequest]) -> tuple:
    """(logits after each context, the batch's cache, context lengths, padding mask)."""
    import torch

    lengths = [len(r.context) for r in requests]
    width = max(lengths)
    ids = torch.tensor(
        [
            [scorer.pad_id] * (width - n) + list(r.context)
            for r, n in zip(requests, lengths, strict=True)
        ]
    )
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    kwargs = {"logits_to_keep": 1} if scorer._keeps_logits else {}
    out = scorer.model(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs
    )
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    return out.logits[:, -1].float(), cache, lengths, mask


def _continuations(
    scorer: LoglikelihoodScorer,
    requests: Sequence[EncodedRequest],
    rows: list[tuple[int, int]],
    cache: Any,
    lengths: list[int],
    mask: Any,
) -> Any:
    """Logits (rows, positions, vocab) after each continuation's tokens but its last."""
    import torch

    conts = [requests[b].continuations[j] for b, j in rows]
    width = max(len(c) for c in conts) - 1
    ids = torch.tensor([list(c[:-1]) + [scorer.pad_id] * (width - len(c) + 1) for c in conts])
    owner = torch.tensor([b for b, _ in rows])
    # right padding needs no mask in a causal model: a pad only follows what is scored
    full_mask = torch.cat([mask[owner], torch.ones(len(rows), width, dtype=mask.dtype)], dim=1)
    start = torch.tensor([lengths[b] for b, _ in rows]).unsqueeze(1)
    positions = start + torch.arange(width).unsqueeze(0)
    out = scorer.model(
        input_ids=ids,
        attention_mask=full_mask,
        position_ids=positions,
        use_cache=True,
        **{scorer.cache_arg: _select(cache, owner)},
    )
    return out.logits.float()


def _select(cache: Any, owner: Any) -> Any:
    """The cache rows of each continuation's item (repeated where an item has several)."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(owner)
        return cache
    return tuple(tuple(t.index_select(0, owner) for t in layer) for layer in cache)
