"""Batched TT-SVD: every row of a table decomposed at once, in float64, chunk by chunk.

For each unfolding ``A`` (``m x n``, one per row of the chunk) the truncated SVD comes
from the symmetric eigendecomposition of the smaller Gram matrix (``A A^T`` or ``A^T A``).
Either way the kept part is an exact orthogonal projection of ``A`` onto its leading
singular subspace, so the reconstruction equals TT-SVD's; the Gram route only loses
accuracy on singular values far below the largest, which truncation discards anyway.
Batched ``eigh`` of many tiny matrices is far cheaper than batched SVD on CPU, and
chunks run on a thread pool (torch releases the GIL inside its kernels).

Ranks per row: a cap (``max_ranks``, the same for every row, as tensorly's
``tensor_train`` does) and/or Oseledets' bound ``delta = eps / sqrt(N-1) * ||x||`` per
step, which gives every row its own ranks and guarantees ``||x - x_TT|| <= eps ||x||``.
Within a chunk, ragged ranks are padded with zeros to the chunk's largest rank and the
padding is dropped before storage (:func:`tasks.compression.cores.flatten_padded`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from tasks.compression.cores import TTCores, flatten_padded

DEFAULT_CHUNK_ROWS = 2048
#: eigenvalues below this fraction of the largest are numerically zero (Gram route)
_NULL_FRACTION = 1e-24

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class TTResult:
    """Cores of a whole table and each row's relative reconstruction error."""

    cores: TTCores
    #: (V,) float64 relative error ||x - x_TT|| / ||x|| of the decomposition
    row_errors: torch.Tensor


def leading_subspace(a: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``cap`` factors of each ``a[b]``: ``U`` (B,m,cap), carry ``S V^T`` (B,cap,n), S^2."""
    m, n = a.shape[1], a.shape[2]
    if m <= n:
        lam, vecs = torch.linalg.eigh(a @ a.mT)
        lam, u = lam.flip(-1).clamp_min(0), vecs[:, :, m - cap :].flip(-1)
        return u, u.mT @ a, lam
    lam, vecs = torch.linalg.eigh(a.mT @ a)
    lam, v = lam.flip(-1).clamp_min(0), vecs[:, :, n - cap :].flip(-1)
    s = lam[:, :cap].sqrt()
    live = lam[:, :cap] > _NULL_FRACTION * lam[:, :1]
    u = a @ (v / torch.where(live, s, torch.inf)[:, None, :])
    return u, s[:, :, None] * v.mT, lam


def tt_svd_chunk(
    rows: torch.Tensor, shape: tuple[int, ...], max_ranks: tuple[int, ...] | None, eps: float | None
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
    """TT-SVD of each row of ``rows`` (B x d). Returns (flat cores, ranks (B,N+1), errors).

    The errors are those of the float64 decomposition: with orthonormal left cores the
    squared error is the sum of the energies discarded at every step.
    """
    x = rows.to(torch.float64)
    batch, order = x.shape[0], len(shape)
    norms2 = (x * x).sum(1)
    delta2 = None if eps is None else (eps * eps / max(order - 1, 1)) * norms2
    ranks = torch.ones(batch, order + 1, dtype=torch.int64)
    discarded = torch.zeros(batch, dtype=torch.float64)
    padded: list[torch.Tensor] = []
    rest, r_prev = x, 1
    for k in range(order - 1):
        a = rest.reshape(batch, r_prev * shape[k], -1)
        m, n = a.shape[1], a.shape[2]
        cap = min(m, n, max_ranks[k] if max_ranks else m)
        if delta2 is None and cap == m:
            # nothing to truncate at this bond: any orthonormal basis of R^m gives the same
            # tensor train up to a rotation, so skip the decomposition and keep the identity
            eye = torch.eye(m, dtype=x.dtype).expand(batch, m, m)
            padded.append(eye.reshape(batch, r_prev, shape[k], m))
            ranks[:, k + 1] = m
            rest, r_prev = a, m
            continue
        u, carry, lam = leading_subspace(a, cap)
        # tail[:, j] = energy discarded when keeping j singular values
        tail = torch.cat(
            [lam.flip(-1).cumsum(-1).flip(-1), torch.zeros(batch, 1, dtype=lam.dtype)], 1
        )
        if delta2 is None:
            r = torch.full((batch,), cap, dtype=torch.int64)
        else:
            need = (tail[:, :-1] > delta2[:, None]).sum(-1)
            nonnull = (lam > _NULL_FRACTION * lam[:, :1]).sum(-1)
            r = torch.minimum(need, nonnull).clamp(1, cap)
        discarded += tail.gather(1, r[:, None]).squeeze(1)
        width = int(r.max())
        u, rest = u[:, :, :width], carry[:, :width]
        if int(r.min()) < width:  # ragged: zero the columns beyond each row's rank
            keep = (torch.arange(width)[None, :] < r[:, None]).to(x.dtype)
            u, rest = u * keep[:, None, :], rest * keep[:, :, None]
        padded.append(u.reshape(batch, r_prev, shape[k], width))
        ranks[:, k + 1] = r
        r_prev = width
    padded.append(rest.reshape(batch, r_prev, shape[-1], 1))
    stored = [c.to(torch.float32) for c in padded]
    errors = (discarded.clamp_min(0) / torch.where(norms2 > 0, norms2, 1.0)).sqrt()
    return flatten_padded(stored, ranks), ranks, errors


def default_workers() -> int:
    """Worker threads: the CPUs torch may use (at least one)."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def tt_svd_table(
    table: torch.Tensor,
    shape: tuple[int, ...],
    *,
    max_ranks: tuple[int, ...] | None = None,
    eps: float | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> TTResult:
    """Per-row TT-SVD of a ``V x d`` table with ``d = prod(shape)``, in bounded memory.

    ``max_ranks`` caps the N-1 inner ranks; ``eps`` bounds each row's relative error.
    With both, each rank is the smaller of the two.
    """
    if math.prod(shape) != table.shape[1]:
        raise ValueError(f"shape {shape} does not multiply to {table.shape[1]}")
    if max_ranks is not None and len(max_ranks) != len(shape) - 1:
        raise ValueError(f"{len(max_ranks)} rank caps for {len(shape) - 1} bonds")
    total = int(table.shape[0])
    starts = list(range(0, total, chunk_rows))
    job = lambda s: tt_svd_chunk(table[s : s + chunk_rows], shape, max_ranks, eps)  # noqa: E731
    flats: list[tuple[torch.Tensor, ...]] = []
    ranks, errors = [], []
    done = 0
    n_workers = workers or default_workers()
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        results = pool.map(job, starts) if n_workers > 1 else map(job, starts)
        for start, (flat, r, e) in zip(starts, results, strict=True):
            flats.append(flat)
            ranks.append(r)
            errors.append(e)
            done = min(total, start + chunk_rows)
            if progress is not None:
                progress(done, total)
    cores = tuple(torch.cat([f[k] for f in flats]) for k in range(len(shape)))
    all_ranks = torch.cat(ranks) if ranks else torch.ones(0, len(shape) + 1, dtype=torch.int64)
    all_errors = torch.cat(errors) if errors else torch.zeros(0, dtype=torch.float64)
    return TTResult(TTCores(tuple(shape), all_ranks, cores), all_errors)
