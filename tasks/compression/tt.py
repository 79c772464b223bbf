"""``tt``: per-token tensor-train compression (TensorSLM / TensorGPT).

Truncation by a rank cap (``rank=8`` or ``rank=4,8``), by a per-row relative error bound
(``eps=0.3``) or by a target compression ratio (``ratio=2``: the smallest error bound, the
same for every row, whose adaptive per-token ranks fit the parameter budget). Without
``shape=`` the tensor shape is chosen among balanced factorisations of ``d`` of order 3-5
and the choice is recorded in the manifest.

Beyond the plain method: ``keep=N`` keeps the rows of the N most frequent tokens exact
(``keep=auto`` picks N for the budget), ``center=true`` decomposes the rows minus their
mean (:mod:`tasks.compression.hybrid`), and ``alloc=adaptive`` shares a ``ratio=`` budget
among rows by marginal error reduction (:mod:`tasks.compression.allocate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from tasks.compression.allocate import tt_svd_budget
from tasks.compression.base import (
    CompressionResult,
    Progress,
    relative_row_errors,
    tensor_bytes,
)
from tasks.compression.calibration import frequency_order
from tasks.compression.cores import TTCores
from tasks.compression.hybrid import (
    Fit,
    choose_keep,
    full_row_errors,
    residual,
    row_weights,
    split_rows,
    split_tensors,
)
from tasks.compression.shapes import auto_candidates, check_shape
from tasks.compression.spec import KEEP_AUTO, VariantSpec
from tasks.compression.ttquant import (
    CORE_BITS,
    embedding_from_tensors,
    quantize_cores,
    stored_bytes,
)
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
            hint=f"give one value or {bonds} comma-separated values",
        )
    return rank


def _run(
    table: torch.Tensor,
    shape: tuple[int, ...],
    caps: tuple[int, ...] | None,
    eps: float | None,
    impl: str,
    progress: Progress | None,
    label: str,
) -> TTResult:
    report = None if progress is None else (lambda done, total: progress(label, done, total))
    if impl == "tensorly":
        from tasks.compression.tensorly_impl import tt_loop_table

        return tt_loop_table(table, shape, max_ranks=caps, progress=report)
    return tt_svd_table(
        table, shape, max_ranks=caps, eps=eps, chunk_rows=DEFAULT_CHUNK_ROWS, progress=report
    )


def search_eps(
    table: torch.Tensor, shape: tuple[int, ...], ratio: float, progress: Progress | None = None
) -> tuple[float, TTResult]:
    """Smallest error bound whose per-token ranks fit ``V*d/ratio`` parameters (bisection).

    The bound runs up to sqrt(N-1), where every rank is 1. Raises
    :class:`CompressionError` when even rank 1 everywhere exceeds the budget.
    """
    rows, d = table.shape
    floor = rows * sum(shape)
    if floor > rows * d / ratio:
        raise CompressionError(
            f"ratio={ratio:g} is out of reach for shape {'x'.join(map(str, shape))}: rank 1 "
            f"everywhere gives {rows * d / floor:.3g}x at most",
            hint="ask for a smaller ratio or a higher-order shape",
        )
    return search_eps_budget(table, shape, rows * d / ratio, progress)


def search_eps_budget(
    table: torch.Tensor, shape: tuple[int, ...], budget: float, progress: Progress | None = None
) -> tuple[float, TTResult]:
    """Smallest error bound, the same for every row, whose cores fit ``budget`` parameters."""
    floor = int(table.shape[0]) * sum(shape)
    if floor > budget:
        raise CompressionError(
            f"a budget of {budget:.0f} parameters is out of reach for shape "
            f"{'x'.join(map(str, shape))}: rank 1 for all {int(table.shape[0])} rows needs "
            f"{floor}",
            hint="ask for a smaller ratio, fewer dense rows or another shape",
        )
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


def choose_shape(
    table: torch.Tensor, rank_given: bool, eps: float | None, ratio: float | None
) -> tuple[tuple[int, ...], dict[str, Any]]:
    """Pick a tensor shape for ``d`` and say why (recorded in the manifest)."""
    d = table.shape[1]
    candidates = auto_candidates(d)
    names = ["x".join(map(str, s)) for s in candidates]
    if rank_given or (ratio is None and eps is None):
        shape = next((s for s in candidates if len(s) == 3), candidates[0])
        return shape, {
            "auto": True,
            "candidates": names,
            "reason": "rank cap: the balanced order-3 factorisation (the papers' "
            "convention; more factors compress more and lose more)",
        }
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
        raise CompressionError(
            f"ratio={ratio:g} is out of reach for every automatic shape ({', '.join(names)})",
            hint="ask for a smaller ratio",
        )
    best = min(scores, key=lambda n: scores[n])
    metric = "mean relative error at the budget" if ratio is not None else "parameters"
    return candidates[names.index(best)], {
        "auto": True,
        "candidates": names,
        "scores": scores,
        "score": metric,
        "sample_rows": int(sample.shape[0]),
        "reason": f"lowest {metric} on a sample of {int(sample.shape[0])} rows",
    }


def rank_stats(cores: TTCores) -> dict[str, Any]:
    """Mean/min/max of every inner bond's rank and the number of distinct rank patterns."""
    low, high = cores.ranks.min(0).values, cores.ranks.max(0).values
    if bool((low == high).all()):  # one pattern: no need to sort the rank table
        inner = [int(v) for v in low[1:-1]]
        return {
            "mean": [float(v) for v in inner],
            "min": inner,
            "max": inner,
            "patterns": 1,
            "uniform": True,
        }
    inner = cores.ranks[:, 1:-1].to(torch.float64)
    return {
        "mean": [round(float(v), 4) for v in inner.mean(0)],
        "min": [int(v) for v in inner.min(0).values],
        "max": [int(v) for v in inner.max(0).values],
        "patterns": int(torch.unique(cores.ranks, dim=0).shape[0]),
        "uniform": bool(torch.unique(cores.ranks, dim=0).shape[0] == 1),
    }


def _fit(alloc: str, shape: tuple[int, ...]) -> Fit:
    """(rows, budget, weights) -> their tensor trains, the budget shared as ``alloc`` says."""

    def fit(rows: torch.Tensor, budget: float, weights: torch.Tensor | None) -> TTResult:
        if alloc == "uniform":
            return search_eps_budget(rows, shape, budget)[1]
        return tt_svd_budget(rows, shape, budget, weights=weights if alloc == "weighted" else None)[
            0
        ]

    return fit


def compress(
    table: torch.Tensor,
    spec: VariantSpec,
    *,
    progress: Progress | None = None,
    token_counts: torch.Tensor | None = None,
    layer0_gain: torch.Tensor | None = None,
) -> CompressionResult:
    """Compress every row of ``table`` into its own tensor train as ``spec`` asks.

    ``token_counts`` ((V,) occurrences in the calibration text, see
    :mod:`tasks.compression.calibration`) orders the tokens for ``keep=``; without them
    the order is by token id. ``metric=layer0`` decomposes the table with channel ``c``
    multiplied by ``|layer0_gain[c]|`` (errors as the first layer's norm weighs them) and
    stores the inverse as ``channel_scale``, applied to every rebuilt row.
    """
    if spec.get("metric") == "layer0":
        return _compress_weighted(table, spec, progress, token_counts, layer0_gain)
    rank, eps, ratio = spec.get("rank"), spec.get("eps"), spec.get("ratio")
    impl, keep, center, alloc = (spec.get(k) for k in ("impl", "keep", "center", "alloc"))
    _check_targets(spec)
    rows, d = (int(s) for s in table.shape)
    budget = None if ratio is None else rows * d / ratio
    order = frequency_order(token_counts if spec.needs_calibration else None, rows)
    split = split_rows(table, order, 0 if keep == KEEP_AUTO else keep, center)
    shape, choice = _shape_for(table, split, spec, budget)
    keep_choice: dict[str, Any] = {"auto": False}
    if keep == KEEP_AUTO:
        n_keep, keep_choice = choose_keep(
            table, order, budget, sum(shape), center, _fit(alloc, shape)
        )
        split = split_rows(table, order, n_keep, center)
    sub = residual(table, split)
    caps = expand_ranks(rank, shape)
    if budget is not None:
        result, eps_used, plan = _decompose_to_budget(
            sub, shape, budget - split.extra_params(d), spec, order, split, progress
        )
    else:
        eps_used, plan = eps, None
        result = _run(sub, shape, caps, eps, impl, progress, "tensor-train decomposition")
    core_tensors, tt_params, result = _store_cores(result, sub, spec.get("cores"))
    tensors = {**core_tensors, **split_tensors(table, split)}
    params = tt_params + split.extra_params(d)
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
        "keep": keep,
        "keep_rows": int(split.dense_ids.numel()),
        "keep_choice": keep_choice,
        "frequency": _frequency_record(spec, token_counts),
        "center": center,
        "cores": spec.get("cores"),
        "core_bits": CORE_BITS[spec.get("cores")],
        "alloc": alloc,
        "allocation": None
        if plan is None
        else {"multiplier": plan.multiplier, "predicted_squared_error": plan.error},
        "counts": {
            "tt_rows": int(split.tt_ids.numel()),
            "dense_rows": int(split.dense_ids.numel()),
            "tt_params": tt_params,
            "dense_params": int(split.dense_ids.numel()) * d,
            "mean_params": d if split.mean is not None else 0,
            "total_params": params,
        },
    }
    return CompressionResult(
        tensors=tensors,
        method=method,
        params=params,
        payload_bytes=tensor_bytes(tensors),
        row_errors=full_row_errors(table, split, sub, result),
    )


def _compress_weighted(
    table: torch.Tensor,
    spec: VariantSpec,
    progress: Progress | None,
    token_counts: torch.Tensor | None,
    layer0_gain: torch.Tensor | None,
) -> CompressionResult:
    """``metric=layer0``: the decomposition of the channel-weighted table, unweighted by a
    stored per-channel scale; row errors measured on the table itself."""
    from tasks.compression.base import relative_row_errors
    from tasks.compression.svd import layer0_weights

    _, weights = layer0_weights(table.to(torch.float64), layer0_gain)
    weights = weights.to(torch.float32)
    plain = VariantSpec(spec.method, tuple((k, v) for k, v in spec.params if k != "metric"))
    result = compress(table * weights, plain, progress=progress, token_counts=token_counts)
    tensors = {**result.tensors, "channel_scale": (1.0 / weights).contiguous()}
    method = {**result.method, "metric": "layer0"}
    rebuilt = build_embedding(tensors, method).materialize()
    return CompressionResult(
        tensors=tensors,
        method=method,
        params=result.params + int(table.shape[1]),
        payload_bytes=tensor_bytes(tensors),
        row_errors=relative_row_errors(table, rebuilt),
    )


def _shape_for(
    table: torch.Tensor, split: Any, spec: VariantSpec, budget: float | None
) -> tuple[Sequence[int], dict[str, Any]]:
    """The spec's tensor shape (checked), or one chosen for the rows left to TT."""
    rows, d = (int(n) for n in table.shape)
    shape = spec.get("shape")
    if shape is not None:
        check_shape(shape, d)
        return shape, {"auto": False}
    sub_ratio = (
        None
        if budget is None
        else _sub_ratio(
            rows - int(split.dense_ids.numel()), d, budget - split.extra_params(d), spec
        )
    )
    return choose_shape(
        residual(table, split), spec.get("rank") is not None, spec.get("eps"), sub_ratio
    )


def _check_targets(spec: VariantSpec) -> None:
    """A TT spec names what to aim for (rank, eps or ratio); tensorly takes a rank only."""
    rank, eps, ratio = spec.get("rank"), spec.get("eps"), spec.get("ratio")
    if rank is None and eps is None and ratio is None:
        raise CompressionError(
            f"variant '{spec.canonical}': tt needs rank=, eps= or ratio=",
            hint="e.g. tt:rank=8, tt:eps=0.4 or tt:ratio=2",
        )
    if spec.get("impl") == "tensorly" and (rank is None or eps is not None):
        raise CompressionError(
            f"variant '{spec.canonical}': impl=tensorly takes a rank cap only (tensorly's "
            "tensor_train has no error bound)",
            hint="use tt:rank=R:impl=tensorly",
        )


def _decompose_to_budget(
    sub: torch.Tensor,
    shape: Sequence[int],
    sub_budget: float,
    spec: VariantSpec,
    order: torch.Tensor,
    split: Any,
    progress: Progress | None,
) -> tuple[Any, float | None, Any]:
    """TT rows within a parameter budget: (result, the eps used or None, the rank plan)."""
    _sub_ratio(int(sub.shape[0]), int(sub.shape[1]), sub_budget, spec)
    alloc = spec.get("alloc")
    if alloc != "uniform":
        weights = row_weights(order)[split.tt_ids] if alloc == "weighted" else None
        result, plan = tt_svd_budget(sub, shape, sub_budget, weights=weights, progress=progress)
        return result, None, plan
    eps_used, result = search_eps_budget(sub, shape, sub_budget, progress)
    return result, eps_used, None


def _frequency_record(spec: VariantSpec, token_counts: torch.Tensor | None) -> Any:
    """Where the token order of ``keep=`` / ``alloc=weighted`` came from (manifest)."""
    if not spec.needs_calibration:
        return None
    if token_counts is None:
        return {"source": "token id"}
    return {
        "source": "calibration text",
        "tokens": int(token_counts.sum()),
        "distinct": int((token_counts > 0).sum()),
    }


def _store_cores(
    result: TTResult, rows: torch.Tensor, cores: str
) -> tuple[dict[str, torch.Tensor], int, TTResult]:
    """Stored tensors of the cores, their parameters (float32 equivalents) and the result
    with each row's error measured on what is stored (quantised codes included)."""
    bits = CORE_BITS[cores]
    if bits is None:
        return result.cores.to_tensors(), result.cores.num_params, result
    tensors = quantize_cores(result.cores, bits)
    params = math.ceil(stored_bytes(tensors, result.cores.order) / 4)
    module = embedding_from_tensors(tensors, result.cores.shape, bits, torch.float32)
    errors = relative_row_errors(rows, module.materialize())
    return tensors, params, TTResult(result.cores, errors)


def _sub_ratio(rows: int, d: int, budget: float, spec: VariantSpec) -> float:
    """The ratio the tensor trains must reach once dense rows and the mean are paid for."""
    if budget <= 0:
        raise CompressionError(
            f"variant '{spec.canonical}': the dense rows and the mean alone exceed the "
            f"parameter budget of ratio={spec.get('ratio'):g}",
            hint="keep fewer rows dense (or keep=auto), or ask for a smaller ratio",
        )
    return rows * d / budget


def build_embedding(
    tensors: dict[str, torch.Tensor], method: dict[str, Any], *, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The on-the-fly embedding of an artifact: :class:`~tasks.compression.embedding.TTEmbedding`,
    or :class:`~tasks.compression.embedding.HybridTTEmbedding` when it has dense rows or a mean."""
    from tasks.compression.embedding import HybridTTEmbedding, TTEmbedding

    if "channel_scale" in tensors:
        from tasks.compression.embedding import ChannelScaledEmbedding

        inner = {k: v for k, v in tensors.items() if k != "channel_scale"}
        return ChannelScaledEmbedding(
            build_embedding(inner, method, dtype=dtype), tensors["channel_scale"]
        )
    shape = tuple(method["shape"])
    bits = CORE_BITS.get(method.get("cores", "fp32"))
    if bits is None:
        cores = TTCores.from_tensors(tensors, shape, where="cores.safetensors")
        if "dense_ids" not in tensors and "mean" not in tensors:
            return TTEmbedding(cores, dtype=dtype)
        return HybridTTEmbedding.from_tensors(cores, tensors, dtype=dtype)
    quantised = embedding_from_tensors(tensors, shape, bits, dtype)
    if "dense_ids" not in tensors and "mean" not in tensors:
        return quantised
    ids = tensors.get("dense_ids", torch.zeros(0, dtype=torch.int64))
    return HybridTTEmbedding(
        quantised,
        quantised.num_embeddings + int(ids.numel()),
        ids,
        tensors.get("dense_rows", torch.zeros(0, quantised.embedding_dim)),
        tensors.get("mean"),
        dtype=dtype,
    )
