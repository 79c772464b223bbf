"""``tt``: per-token tensor-train compression (TensorSLM / TensorGPT).

Truncation by a rank cap (``rank=8`` or ``rank=4,8``), by a per-row relative error bound
(``eps=0.3``) or by a target compression ratio (``ratio=2``: the smallest error bound, the
same for every row, whose adaptive per-token ranks fit the parameter budget). Without
``shape=`` the tensor shape is chosen among balanced factorisations of ``d`` of order 3-5
and the choice is recorded in the manifest.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tasks.compression.base import CompressionResult, Progress, tensor_bytes
from tasks.compression.cores import TTCores
from tasks.compression.shapes import auto_candidates, check_shape
from tasks.compression.spec import VariantSpec
from tasks.compression.ttsvd import DEFAULT_CHUNK_ROWS, TTResult, tt_svd_table
from tasks.errors import CompressionError

#: rows used to compare candidate shapes when the shape is chosen automatically
SHAPE_SAMPLE_ROWS = 2048
#: the ratio search stops once the achieved ratio is within this fraction above the target
RATIO_TOLERANCE = 0.01
_MAX_SEARCH_STEPS = 40


def expand_ranks(rank: tuple[int, ...] | None, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """One cap per bond (N-1 of them) from ``rank=8`` or ``rank=4,8``."""
    if rank is None:
        return None
    bonds = len(shape) - 1
    if len(rank) == 1:
        return rank * bonds
    if len(rank) != bonds:
        raise CompressionError(
            f"rank={','.join(map(str, rank))} gives {len(rank)} caps, but shape "
            f"{'x'.join(map(str, shape))} has {bonds} bonds",
            hint=f"give one value or {bonds} comma-separated values")
    return rank


def _run(table: torch.Tensor, shape: tuple[int, ...], caps: tuple[int, ...] | None,
         eps: float | None, impl: str, progress: Progress | None, label: str) -> TTResult:
    report = None if progress is None else (lambda done, total: progress(label, done, total))
    if impl == "tensorly":
        from tasks.compression.tensorly_impl import tt_loop_table

        return tt_loop_table(table, shape, max_ranks=caps, progress=report)
    return tt_svd_table(table, shape, max_ranks=caps, eps=eps, chunk_rows=DEFAULT_CHUNK_ROWS,
                        progress=report)


def search_eps(table: torch.Tensor, shape: tuple[int, ...], ratio: float,
               progress: Progress | None = None) -> tuple[float, TTResult]:
    """Smallest error bound whose per-token ranks fit ``V*d/ratio`` parameters (bisection).

    The bound runs up to sqrt(N-1), where every rank is 1. Raises
    :class:`CompressionError` when even rank 1 everywhere exceeds the budget.
    """
    rows, d = table.shape
    budget = rows * d / ratio
    floor = rows * sum(shape)
    if floor > budget:
        raise CompressionError(
            f"ratio={ratio:g} is out of reach for shape {'x'.join(map(str, shape))}: rank 1 "
            f"everywhere gives {rows * d / floor:.3g}x at most",
            hint="ask for a smaller ratio or a higher-order shape")
    full = tt_svd_table(table, shape, eps=0.0)
    if full.cores.num_params <= budget:
        return 0.0, full
    lo, hi = 0.0, math.sqrt(len(shape) - 1)
    best: tuple[float, TTResult] | None = None
    for step in range(_MAX_SEARCH_STEPS):
        mid = (lo + hi) / 2
        result = tt_svd_table(table, shape, eps=mid)
        if progress is not None:
            progress("searching the error bound", step + 1, _MAX_SEARCH_STEPS)
        params = result.cores.num_params
        if params <= budget:
            best, hi = (mid, result), mid
            if params >= budget / (1 + RATIO_TOLERANCE):
                break
        else:
            lo = mid
    if best is None:  # the loop ends inside the bracket; rank 1 everywhere always fits
        best = (hi, tt_svd_table(table, shape, eps=hi))
    return best


def _sample(table: torch.Tensor) -> torch.Tensor:
    if table.shape[0] <= SHAPE_SAMPLE_ROWS:
        return table
    gen = torch.Generator().manual_seed(0)
    return table[torch.randperm(table.shape[0], generator=gen)[:SHAPE_SAMPLE_ROWS]]


def choose_shape(table: torch.Tensor, rank_given: bool, eps: float | None,
                 ratio: float | None) -> tuple[tuple[int, ...], dict[str, Any]]:
    """Pick a tensor shape for ``d`` and say why (recorded in the manifest)."""
    d = table.shape[1]
    candidates = auto_candidates(d)
    names = ["x".join(map(str, s)) for s in candidates]
    if rank_given or (ratio is None and eps is None):
        shape = next((s for s in candidates if len(s) == 3), candidates[0])
        return shape, {"auto": True, "candidates": names,
                       "reason": "rank cap: the balanced order-3 factorisation (the papers' "
                                 "convention; more factors compress more and lose more)"}
    sample = _sample(table)
    scores: dict[str, float] = {}
    for name, shape in zip(names, candidates, strict=True):
        if ratio is not None:
            try:
                _, result = search_eps(sample, shape, ratio)
            except CompressionError:
                continue
            scores[name] = float(result.row_errors.mean())
        else:
            result = tt_svd_table(sample, shape, eps=eps)
            scores[name] = float(result.cores.num_params)
    if not scores:
        raise CompressionError(f"ratio={ratio:g} is out of reach for every automatic shape "
                               f"({', '.join(names)})", hint="ask for a smaller ratio")
    best = min(scores, key=lambda n: scores[n])
    metric = "mean relative error at the budget" if ratio is not None else "parameters"
    return candidates[names.index(best)], {
        "auto": True, "candidates": names, "scores": scores, "score": metric,
        "sample_rows": int(sample.shape[0]),
        "reason": f"lowest {metric} on a sample of {int(sample.shape[0])} rows"}


def rank_stats(cores: TTCores) -> dict[str, Any]:
    """Mean/min/max of every inner bond's rank and the number of distinct rank patterns."""
    inner = cores.ranks[:, 1:-1].to(torch.float64)
    return {
        "mean": [round(float(v), 4) for v in inner.mean(0)],
        "min": [int(v) for v in inner.min(0).values],
        "max": [int(v) for v in inner.max(0).values],
        "patterns": int(torch.unique(cores.ranks, dim=0).shape[0]),
        "uniform": bool(torch.unique(cores.ranks, dim=0).shape[0] == 1),
    }


def compress(table: torch.Tensor, spec: VariantSpec, *,
             progress: Progress | None = None) -> CompressionResult:
    """Compress every row of ``table`` into its own tensor train as ``spec`` asks."""
    rank, eps, ratio = spec.get("rank"), spec.get("eps"), spec.get("ratio")
    impl = spec.get("impl")
    if rank is None and eps is None and ratio is None:
        raise CompressionError(f"variant '{spec.canonical}': tt needs rank=, eps= or ratio=",
                               hint="e.g. tt:rank=8, tt:eps=0.4 or tt:ratio=2")
    if impl == "tensorly" and (rank is None or eps is not None):
        raise CompressionError(
            f"variant '{spec.canonical}': impl=tensorly takes a rank cap only (tensorly's "
            "tensor_train has no error bound)", hint="use tt:rank=R:impl=tensorly")
    d = int(table.shape[1])
    shape = spec.get("shape")
    if shape is not None:
        check_shape(shape, d)
        choice: dict[str, Any] = {"auto": False}
    else:
        shape, choice = choose_shape(table, rank is not None, eps, ratio)
    caps = expand_ranks(rank, shape)
    eps_used = eps
    if ratio is not None:
        eps_used, result = search_eps(table, shape, ratio, progress)
    else:
        result = _run(table, shape, caps, eps, impl, progress, "tensor-train decomposition")
    tensors = result.cores.to_tensors()
    method = {
        "name": "tt",
        "impl": impl,
        "shape": list(shape),
        "shape_choice": choice,
        "rank_cap": None if caps is None else list(caps),
        "eps": eps,
        "target_ratio": ratio,
        "eps_used": eps_used,
        "rank_stats": rank_stats(result.cores),
    }
    return CompressionResult(tensors=tensors, method=method, params=result.cores.num_params,
                             payload_bytes=tensor_bytes(tensors), row_errors=result.row_errors)


def build_embedding(tensors: dict[str, torch.Tensor], method: dict[str, Any], *,
                    dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The on-the-fly :class:`~tasks.embedding.TTEmbedding` of an artifact."""
    from tasks.embedding import TTEmbedding

    cores = TTCores.from_tensors(tensors, tuple(method["shape"]), where="cores.safetensors")
    return TTEmbedding(cores, dtype=dtype)
