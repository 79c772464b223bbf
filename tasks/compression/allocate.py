"""Per-token ranks under one global parameter budget (``tt:alloc=adaptive``).

A single error bound for every row (``alloc=uniform``) spends as many parameters on a row
that compresses well as its bound demands and no more, but it never moves parameters
from rows where they buy little to rows where they buy much. Here every row gets the rank
pattern that minimises the table's total (optionally weighted) squared error for the
budget:

1. For every row and every candidate rank pattern ``(1, r_1, ..., r_{N-1}, 1)`` the
   squared error of sequential TT-SVD truncation at those ranks is exact and cheap: with
   orthonormal left cores it is the sum of the energies discarded at every bond, read off
   the singular values of each unfolding (:func:`rank_options`).
2. The choice is a multiple-choice knapsack, solved by its Lagrangian relaxation: each row
   takes the pattern minimising ``w * err2 + lam * params``, and ``lam`` is bisected to
   the smallest value whose total fits the budget (:func:`allocate`). Rows switch pattern
   at distinct multipliers, so the total lands within one row's step of the budget.
3. The rows that chose a pattern are decomposed together at that rank cap and the parts
   merged into one ragged :class:`~tasks.compression.cores.TTCores`.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from tasks.compression.base import Progress
from tasks.compression.cores import merge_cores
from tasks.compression.ttsvd import (
    DEFAULT_CHUNK_ROWS,
    TTResult,
    default_workers,
    leading_subspace,
    tt_svd_table,
)
from tasks.errors import CompressionError

#: upper bound on the candidate rank patterns per row (ranks on a grid beyond it)
MAX_PATTERNS = 512
_BISECTION_STEPS = 100


@dataclass(frozen=True)
class RankOptions:
    """Candidate rank patterns and the squared error of every row at each of them."""

    #: (P, N+1) int64 rank patterns, ordered by parameters (fewest first)
    patterns: torch.Tensor
    #: (P,) int64 parameters of one row at each pattern
    params: torch.Tensor
    #: (V, P) float64 squared error ||x - x_TT||^2 of every row at each pattern
    err2: torch.Tensor


@dataclass(frozen=True)
class Allocation:
    """The pattern every row takes and what it costs."""

    #: (V,) index into the options' patterns
    choice: torch.Tensor
    params: int
    #: total (weighted) squared error of the choice
    error: float
    multiplier: float


def _bond_ranks(full: int, per_bond: int) -> list[int]:
    """Every rank 1..full, or ``per_bond`` of them spread geometrically (1 and full kept)."""
    if full <= per_bond:
        return list(range(1, full + 1))
    grid = torch.logspace(0, math.log10(full), per_bond, dtype=torch.float64).round()
    return sorted({int(v) for v in grid} | {1, full})


def _pattern_params(pattern: tuple[int, ...], shape: tuple[int, ...]) -> int:
    return sum(pattern[k] * dim * pattern[k + 1] for k, dim in enumerate(shape))


def _chunk_options(
    rows: torch.Tensor, shape: tuple[int, ...], per_bond: int
) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Rank patterns (boundary ranks included) and each row's squared error at each."""
    x = rows.to(torch.float64)
    batch, order = x.shape[0], len(shape)
    patterns: list[tuple[int, ...]] = []
    errors: list[torch.Tensor] = []

    def descend(
        rest: torch.Tensor, k: int, prefix: tuple[int, ...], discarded: torch.Tensor
    ) -> None:
        a = rest.reshape(batch, prefix[-1] * shape[k], -1)
        full = min(a.shape[1], a.shape[2])
        _, carry, lam = leading_subspace(a, full)
        # tail[:, j] = energy discarded when keeping j singular values
        tail = torch.cat(
            [lam.flip(-1).cumsum(-1).flip(-1), torch.zeros(batch, 1, dtype=lam.dtype)], 1
        )
        for r in _bond_ranks(full, per_bond):
            lost = discarded + tail[:, r]
            if k == order - 2:
                patterns.append((*prefix, r, 1))
                errors.append(lost.clamp_min(0))
            else:
                descend(carry[:, :r], k + 1, (*prefix, r), lost)

    descend(x, 0, (1,), torch.zeros(batch, dtype=torch.float64))
    return patterns, torch.stack(errors, 1)


def rank_options(
    table: torch.Tensor,
    shape: tuple[int, ...],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    workers: int | None = None,
) -> RankOptions:
    """Every row's squared TT-SVD error at every candidate rank pattern of ``shape``."""
    if math.prod(shape) != table.shape[1]:
        raise ValueError(f"shape {shape} does not multiply to {table.shape[1]}")
    per_bond = max(2, int(MAX_PATTERNS ** (1 / max(len(shape) - 1, 1))))
    starts = list(range(0, int(table.shape[0]), chunk_rows))
    job = lambda s: _chunk_options(table[s : s + chunk_rows], shape, per_bond)  # noqa: E731
    n_workers = workers or default_workers()
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        results = list(pool.map(job, starts) if n_workers > 1 else map(job, starts))
    if not results:
        raise ValueError("rank_options of an empty table")
    patterns = results[0][0]  # the enumeration does not depend on the data
    params = torch.tensor([_pattern_params(p, shape) for p in patterns], dtype=torch.int64)
    order = torch.sort(params, stable=True).indices
    err2 = torch.cat([e for _, e in results])[:, order]
    return RankOptions(torch.tensor(patterns, dtype=torch.int64)[order], params[order], err2)


def allocate(
    options: RankOptions, budget: float, weights: torch.Tensor | None = None
) -> Allocation:
    """Each row's pattern minimising the total weighted squared error within ``budget``.

    Raises :class:`CompressionError` when even the smallest pattern for every row exceeds
    the budget.
    """
    cost = options.err2 if weights is None else options.err2 * weights[:, None]
    rows = int(cost.shape[0])
    params = options.params.to(torch.float64)
    if rows * float(params[0]) > budget:
        raise CompressionError(
            f"a budget of {budget:.0f} parameters is out of reach: rank 1 for all {rows} rows "
            f"needs {rows * int(params[0])}",
            hint="ask for a smaller ratio",
        )

    def pick(lam: float) -> tuple[torch.Tensor, float]:
        choice = torch.argmin(cost + lam * params, dim=1)  # ties: the first, fewest params
        return choice, float(params[choice].sum())

    choice, used = pick(0.0)
    lo, hi = 0.0, float(cost.max()) + 1.0  # at hi every row takes the fewest parameters
    if used > budget:
        choice, used = pick(hi)
        for _ in range(_BISECTION_STEPS):
            mid = (lo + hi) / 2
            if not lo < mid < hi:  # the bracket is as narrow as floats allow
                break
            c, u = pick(mid)
            if u <= budget:
                hi, choice, used = mid, c, u
            else:
                lo = mid
    else:
        hi = 0.0
    error = float(cost.gather(1, choice[:, None]).sum())
    return Allocation(choice, int(used), error, hi)


def tt_svd_budget(
    table: torch.Tensor,
    shape: tuple[int, ...],
    budget: float,
    *,
    weights: torch.Tensor | None = None,
    progress: Progress | None = None,
) -> tuple[TTResult, Allocation]:
    """Per-row TT-SVD with the rank patterns :func:`allocate` picks for ``budget``."""
    options = rank_options(table, shape)
    plan = allocate(options, budget, weights)
    used = torch.unique(plan.choice)
    parts = []
    errors = torch.empty(int(table.shape[0]), dtype=torch.float64)
    for i, p in enumerate(used.tolist()):
        rows = torch.nonzero(plan.choice == p).flatten()
        caps = tuple(int(r) for r in options.patterns[p, 1:-1])
        part = tt_svd_table(table[rows], shape, max_ranks=caps)
        parts.append((rows, part.cores))
        errors[rows] = part.row_errors
        if progress is not None:
            progress("adaptive ranks", i + 1, len(used))
    return TTResult(merge_cores(parts, int(table.shape[0])), errors), plan
