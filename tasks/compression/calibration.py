"""Token frequencies from the built-in calibration text, for ``tt:keep=``.

The counts come from ``tasks.data.builtin_text("calibration")`` tokenized with the model's
own tokenizer, never from the evaluation text, so no variant is tuned on what it is
scored on. Tokens are ordered by count, most frequent first; ties and tokens the text
never shows are ordered by token id, lower first (BPE vocabularies number their merges in
training order, so low ids are a usable proxy for frequency).
"""

from __future__ import annotations

from typing import Any

import torch

from tasks import data as builtin_data
from tasks.models import model_context

CALIBRATION_TEXT = "calibration"


def token_counts(tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """(V,) int64 occurrences of every token id in the calibration text.

    Ids the tokenizer produces beyond ``vocab_size`` (added tokens outside the table) are
    ignored.
    """
    text = builtin_data.builtin_text(CALIBRATION_TEXT)
    ids = torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.int64)
    ids = ids[(ids >= 0) & (ids < vocab_size)]
    return torch.bincount(ids, minlength=vocab_size)


def frequency_order(counts: torch.Tensor | None, vocab_size: int) -> torch.Tensor:
    """Token ids, most frequent first; ties (and everything without counts) by id."""
    ids = torch.arange(vocab_size, dtype=torch.int64)
    if counts is None:
        return ids
    if counts.shape != (vocab_size,):
        raise ValueError(f"counts of shape {tuple(counts.shape)} for {vocab_size} tokens")
    # stable sort on -count keeps ids ascending within every count
    return ids[torch.sort(-counts.to(torch.int64), stable=True).indices]


def zipf_weights(count: int) -> torch.Tensor:
    """(count,) float64 expected share of each position of a frequency order (Zipf's law).

    Position k (0-based) gets 1 / (k + 1), normalised to sum to 1: the prior used to weigh
    reconstruction errors by how often a token is expected to occur.
    """
    w = 1.0 / torch.arange(1, count + 1, dtype=torch.float64)
    return w / w.sum()


#: tokens per forward pass when the model scores the calibration text
IMPORTANCE_WINDOW = 512


def model_importance(model: Any, tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """(V,) float64: the model's probability of every token, averaged over the positions
    of the calibration text (windows of ``IMPORTANCE_WINDOW`` tokens or the model's context, no overlap).

    A prior over the whole vocabulary from the model itself: smooth where counts in a
    short text are noise, and never zero for a token the text does not show.
    """
    text = builtin_data.builtin_text(CALIBRATION_TEXT)
    ids = torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.int64)
    ids = ids[(ids >= 0) & (ids < vocab_size)]
    total = torch.zeros(vocab_size, dtype=torch.float64)
    positions = 0
    # no longer than the model's context (a short-context model indexes past its positions)
    step = min(IMPORTANCE_WINDOW, model_context(model) or IMPORTANCE_WINDOW)
    with torch.inference_mode():
        for start in range(0, ids.numel(), step):
            window = ids[start : start + step].unsqueeze(0)
            logits = model(input_ids=window, use_cache=False).logits[0, :, :vocab_size]
            total += torch.softmax(logits.to(torch.float64), dim=-1).sum(dim=0)
            positions += window.shape[1]
    return total / max(positions, 1)
