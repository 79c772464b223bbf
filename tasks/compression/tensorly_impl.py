"""The published baseline: a per-row loop over ``tensorly.decomposition.tensor_train``.

This is how the method's authors decompose an embedding table (one tensor at a time, a
rank cap only, tensorly's TT types); it is kept as ``tt:impl=tensorly`` for comparison
and as the reference the batched implementation is tested against. Controller only: the
agent never imports this module (nor tensorly).
"""

from __future__ import annotations

import numpy as np
import tensorly as tl
import torch
from tensorly.decomposition import tensor_train
from tensorly.tt_tensor import TTTensor, tt_to_tensor, validate_tt_rank

from tasks.compression.cores import TTCores
from tasks.compression.ttsvd import ProgressFn, TTResult

_PROGRESS_EVERY = 512


def full_rank_list(shape: tuple[int, ...], max_ranks: tuple[int, ...]) -> list[int]:
    """tensorly's rank list ``[1, r_1, ..., 1]`` for the cap, validated by tensorly."""
    return list(validate_tt_rank(tuple(shape), rank=[1, *max_ranks, 1]))


def decompose_row(row: np.ndarray, shape: tuple[int, ...], rank: list[int]) -> TTTensor:
    """One row through ``tensor_train``: the per-token step of the published method."""
    return tensor_train(tl.tensor(row.reshape(shape)), rank=list(rank))


def tt_loop_table(
    table: torch.Tensor,
    shape: tuple[int, ...],
    *,
    max_ranks: tuple[int, ...],
    rows: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
) -> TTResult:
    """TT-decompose every row (or only ``rows``) of ``table`` one at a time with tensorly.

    Cores are stored as float32 exactly like the batched implementation, and each row's
    relative error is measured on the float32 cores with ``tt_to_tensor``.
    """
    data = table.detach().to(torch.float64).numpy()
    index = range(data.shape[0]) if rows is None else rows.tolist()
    rank = full_rank_list(shape, max_ranks)
    flats: list[list[np.ndarray]] = [[] for _ in shape]
    ranks, errors = [], []
    total = len(index)
    with tl.backend_context("numpy"):
        for done, i in enumerate(index, start=1):
            x = data[i]
            factors = [np.asarray(f, dtype=np.float32) for f in decompose_row(x, shape, rank)]
            recon = tt_to_tensor([f.astype(np.float64) for f in factors]).reshape(-1)
            norm = float(np.linalg.norm(x))
            errors.append(float(np.linalg.norm(x - recon)) / (norm if norm > 0 else 1.0))
            ranks.append([1, *(f.shape[2] for f in factors)])
            for k, f in enumerate(factors):
                flats[k].append(f.reshape(-1))
            if progress is not None and (done % _PROGRESS_EVERY == 0 or done == total):
                progress(done, total)
    cores = tuple(torch.from_numpy(np.concatenate(parts)) for parts in flats)
    tt = TTCores(tuple(shape), torch.tensor(ranks, dtype=torch.int64), cores)
    return TTResult(tt, torch.tensor(errors, dtype=torch.float64))
