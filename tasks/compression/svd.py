"""``svd``: whole-table truncated SVD, the low-rank baseline at the same parameter budget.

``E ~ L R`` with ``L = U_k S_k`` (V x k) and ``R = V_k^T`` (k x d); ``k(V + d)`` parameters.
The factorisation comes from the eigendecomposition of the small ``d x d`` Gram matrix in
float64, which yields the same projection ``E V_k V_k^T`` as a full SVD.

``metric=layer0`` minimises the error as the first layer sees it: its RMS norm divides a
row by the row's root mean square and multiplies channel ``c`` by the gain ``g_c``. With
row weights ``r = 1 / rms`` and channel weights ``|g|`` the weighted problem is separable,
so its optimum is exact: ``E ~ D_r^-1 [D_r E D_g]_k D_g^-1``, folded into the two
factors (no extra data, the same module on the device).
"""

from __future__ import annotations

from typing import Any

import torch

from tasks.compression.base import CompressionResult, Progress, relative_row_errors, tensor_bytes
from tasks.compression.spec import VariantSpec
from tasks.errors import CompressionError


def rank_for_ratio(rows: int, dim: int, ratio: float) -> int:
    """Largest rank whose ``k(V + d)`` parameters fit ``V*d/ratio`` (at least 1)."""
    return max(1, int(rows * dim / (ratio * (rows + dim))))


#: channel weights below this share of the largest gain are raised to it (a gain near
#: zero would blow its channel up when the factor is divided by it)
MIN_GAIN_SHARE = 1e-3


def layer0_weights(x: torch.Tensor, gain: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row weights (1 / root mean square) and channel weights (|gain|) of float64 ``x``."""
    if gain is None or gain.shape != (x.shape[1],):
        raise CompressionError(
            "metric=layer0 needs the gain of the first layer's input norm",
            hint="this model has none that tasks.models.layer0_gain can find; use metric=l2",
        )
    rms = x.pow(2).mean(1).sqrt()
    rows = torch.where(rms > 0, 1.0 / rms.clamp_min(1e-30), torch.ones_like(rms))
    g = gain.to(torch.float64).abs()
    return rows, g.clamp_min(float(g.max()) * MIN_GAIN_SHARE)


def compress(
    table: torch.Tensor,
    spec: VariantSpec,
    *,
    progress: Progress | None = None,
    layer0_gain: torch.Tensor | None = None,
) -> CompressionResult:
    """Truncated SVD of the whole table at ``rank=`` or at the rank ``ratio=`` allows
    (of the table as layer 0 sees it under ``metric=layer0``)."""
    rows, dim = table.shape
    rank, ratio = spec.get("rank"), spec.get("ratio")
    if rank is None and ratio is None:
        raise CompressionError(
            f"variant '{spec.canonical}': svd needs rank= or ratio=",
            hint="e.g. svd:ratio=2 or svd:rank=128",
        )
    k = rank if rank is not None else rank_for_ratio(rows, dim, ratio)
    if k > min(rows, dim):
        raise CompressionError(
            f"svd rank {k} exceeds min(V, d) = {min(rows, dim)}", hint="ask for a smaller rank"
        )
    if progress is not None:
        progress("truncated SVD", 0, 1)
    x = table.to(torch.float64)
    weighted = spec.get("metric") == "layer0"
    if weighted:
        row_w, col_w = layer0_weights(x, layer0_gain)
        x = x * row_w[:, None] * col_w
    lam, vecs = torch.linalg.eigh(x.mT @ x)
    right = vecs.flip(-1)[:, :k].mT.contiguous()  # (k, d)
    left = x @ right.mT  # (V, k) = U_k S_k
    if weighted:
        left, right = left / row_w[:, None], right / col_w
    tensors = {"left": left.to(torch.float32), "right": right.to(torch.float32)}
    approx = tensors["left"].to(torch.float64) @ tensors["right"].to(torch.float64)
    if progress is not None:
        progress("truncated SVD", 1, 1)
    energy = lam.clamp_min(0).flip(-1)
    method = {
        "name": "svd",
        "rank": k,
        "target_ratio": ratio,
        "energy_kept": float(energy[:k].sum() / energy.sum()) if energy.sum() > 0 else 1.0,
        "metric": spec.get("metric"),
    }
    return CompressionResult(
        tensors=tensors,
        method=method,
        params=k * (rows + dim),
        payload_bytes=tensor_bytes(tensors),
        row_errors=relative_row_errors(table, approx),
    )


def build_embedding(
    tensors: dict[str, torch.Tensor], method: dict[str, Any], *, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The :class:`~tasks.compression.embedding.LowRankEmbedding` of an artifact."""
    from tasks.compression.embedding import LowRankEmbedding
    from tasks.errors import ArtifactError

    left, right = tensors["left"], tensors["right"]
    if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[0]:
        raise ArtifactError(
            f"cores.safetensors: factors {tuple(left.shape)} and "
            f"{tuple(right.shape)} do not multiply"
        )
    return LowRankEmbedding(left, right, dtype=dtype)
