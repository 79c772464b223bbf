"""Exact dense rows and a stored mean beside the tensor trains (``tt:keep=``, ``tt:center=``).

A table is split into the rows kept dense (the ``keep`` most frequent tokens, exact) and
the rows decomposed as tensor trains. With ``center`` the mean of the decomposed rows is
subtracted first and stored; reconstruction adds it back. Dense rows and the mean are
parameters like any other: they count against the budget of ``ratio=``.

``keep=auto`` chooses the number of dense rows for the budget by sweeping a few values on
a sample of rows: for each, the rows left to decompose get what remains of the budget, and
the expected error is the Zipf weight of those rows' frequency positions times their mean
squared error on the sample (:func:`choose_keep`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tasks.compression.calibration import zipf_weights
from tasks.compression.ttsvd import TTResult
from tasks.errors import CompressionError

#: rows per candidate when keep=auto compares numbers of dense rows
KEEP_SAMPLE_ROWS = 2048
#: fractions of the largest affordable number of dense rows that keep=auto compares
KEEP_FRACTIONS = (0.0, 0.25, 0.5, 0.625, 0.75, 0.8125, 0.875, 0.9375, 1.0)

#: fit(rows, budget, weights) -> the rows' tensor trains within ``budget`` parameters
Fit = Callable[[torch.Tensor, float, torch.Tensor], TTResult]


@dataclass(frozen=True)
class Split:
    """Which rows stay dense, which become tensor trains, and the mean they share."""

    #: ascending token ids of the rows kept exact
    dense_ids: torch.Tensor
    #: ascending token ids of the rows decomposed
    tt_ids: torch.Tensor
    #: (d,) float32 mean of the decomposed rows, or None without centering
    mean: torch.Tensor | None

    def extra_params(self, dim: int) -> int:
        """Parameters beside the cores: the dense rows and the mean."""
        return int(self.dense_ids.numel()) * dim + (dim if self.mean is not None else 0)


def split_rows(table: torch.Tensor, order: torch.Tensor, keep: int, center: bool) -> Split:
    """Keep the first ``keep`` tokens of ``order`` dense; the mean of the others if asked."""
    rows = int(table.shape[0])
    if keep >= rows:
        raise CompressionError(
            f"keep={keep} keeps all {rows} rows dense: nothing to compress",
            hint="use the dense variant, or keep fewer rows",
        )
    dense = torch.sort(order[:keep]).values
    mask = torch.ones(rows, dtype=torch.bool)
    mask[dense] = False
    tt_ids = torch.nonzero(mask).flatten()
    mean = table[tt_ids].to(torch.float64).mean(0).to(torch.float32) if center else None
    return Split(dense, tt_ids, mean)


def residual(table: torch.Tensor, split: Split) -> torch.Tensor:
    """The rows to decompose, minus the stored (float32) mean (the table itself when every
    row is decomposed and nothing is subtracted: no copy)."""
    if split.mean is None and int(split.tt_ids.numel()) == int(table.shape[0]):
        return table
    rows = table[split.tt_ids].to(torch.float64)
    if split.mean is not None:
        rows = rows - split.mean.to(torch.float64)
    return rows


def split_tensors(table: torch.Tensor, split: Split) -> dict[str, torch.Tensor]:
    """The tensors stored beside the cores (none for a plain tensor-train table)."""
    tensors: dict[str, torch.Tensor] = {}
    if split.dense_ids.numel():
        tensors["dense_ids"] = split.dense_ids.to(torch.int32).contiguous()
        tensors["dense_rows"] = table[split.dense_ids].to(torch.float32).contiguous()
    if split.mean is not None:
        tensors["mean"] = split.mean.contiguous()
    return tensors


def full_row_errors(
    table: torch.Tensor, split: Split, residual_rows: torch.Tensor, tt: TTResult
) -> torch.Tensor:
    """(V,) error relative to the original rows: 0 for dense rows, the cores' otherwise."""
    if residual_rows is table:  # every row decomposed as it is
        return tt.row_errors
    absolute = tt.row_errors * residual_rows.norm(dim=1)
    norms = table[split.tt_ids].to(torch.float64).norm(dim=1)
    errors = torch.zeros(int(table.shape[0]), dtype=torch.float64)
    errors[split.tt_ids] = absolute / torch.where(norms > 0, norms, 1.0)
    return errors


def row_weights(order: torch.Tensor) -> torch.Tensor:
    """(V,) Zipf weight of every token id from its position in the frequency ``order``."""
    weights = torch.empty(order.numel(), dtype=torch.float64)
    weights[order] = zipf_weights(order.numel())
    return weights


def most_dense_rows(rows: int, dim: int, budget: float, floor: int, center: bool) -> int:
    """Most rows that fit dense while every other row still gets its smallest cores."""
    spare = budget - (dim if center else 0) - rows * floor
    return max(0, min(rows - 1, int(spare // (dim - floor)))) if dim > floor else 0


def choose_keep(
    table: torch.Tensor, order: torch.Tensor, budget: float, floor: int, center: bool, fit: Fit
) -> tuple[int, dict[str, Any]]:
    """The number of dense rows with the lowest expected error for ``budget``.

    ``floor``: parameters of one row at the smallest ranks. Returns the choice and what
    was compared (recorded in the manifest).
    """
    rows, dim = (int(s) for s in table.shape)
    top = most_dense_rows(rows, dim, budget, floor, center)
    weights = zipf_weights(rows)
    energy = float((weights * table[order].to(torch.float64).pow(2).sum(1)).sum())
    gen = torch.Generator().manual_seed(0)
    scores: dict[int, float] = {}
    for keep in sorted({round(top * f) for f in KEEP_FRACTIONS}):
        split = split_rows(table, order, keep, center)
        left = rows - keep
        per_row = (budget - split.extra_params(dim)) / left
        if per_row < floor:
            continue
        positions = keep + torch.randperm(left, generator=gen)[:KEEP_SAMPLE_ROWS]
        sample = table[order[positions]].to(torch.float64)
        if split.mean is not None:
            sample = sample - split.mean.to(torch.float64)
        result = fit(sample, per_row * sample.shape[0], weights[positions])
        err2 = (result.row_errors * sample.norm(dim=1)).pow(2).mean()
        scores[keep] = float(weights[keep:].sum() * err2) / energy
    if not scores:
        raise CompressionError(
            f"a budget of {budget:.0f} parameters cannot hold the smallest "
            f"cores of all {rows} rows",
            hint="ask for a smaller ratio",
        )
    best = min(scores, key=lambda k: scores[k])
    return best, {
        "auto": True,
        "largest": top,
        "sample_rows": KEEP_SAMPLE_ROWS,
        "scores": {str(k): v for k, v in scores.items()},
        "score": "expected Zipf-weighted relative squared error",
        "reason": f"lowest expected error among {len(scores)} numbers of dense rows",
    }
