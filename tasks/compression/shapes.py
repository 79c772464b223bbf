"""Tensor shapes for a hidden size: factorisations of ``d`` and the balanced candidates."""

from __future__ import annotations

import math

from tasks.errors import CompressionError

AUTO_ORDERS = (3, 4, 5)


def factorizations(d: int, order: int, smallest: int = 2) -> list[tuple[int, ...]]:
    """All non-decreasing tuples of ``order`` factors >= ``smallest`` whose product is d."""
    if order == 1:
        return [(d,)] if d >= smallest else []
    out = []
    f = smallest
    while f**order <= d:
        if d % f == 0:
            out.extend((f, *rest) for rest in factorizations(d // f, order - 1, f))
        f += 1
    return out


def balanced_shape(d: int, order: int) -> tuple[int, ...] | None:
    """The factorisation of ``d`` into ``order`` factors with the smallest spread of log-sizes.

    576 -> 8x8x9 (order 3) or 4x4x6x6 (order 4), the shapes the literature uses.
    """
    options = factorizations(d, order)
    if not options:
        return None
    return min(options, key=lambda s: (max(s) / min(s), s))


def auto_candidates(d: int) -> list[tuple[int, ...]]:
    """The balanced shape of each order in :data:`AUTO_ORDERS` that exists for ``d``."""
    found = [balanced_shape(d, order) for order in AUTO_ORDERS]
    shapes = [s for s in found if s is not None]
    if not shapes:
        raise CompressionError(
            f"hidden size {d} has no factorisation into {AUTO_ORDERS[0]}-{AUTO_ORDERS[-1]} "
            "factors >= 2",
            hint="give an explicit shape=AxB (order 2) or use svd or int",
        )
    return shapes


def check_shape(shape: tuple[int, ...], d: int) -> None:
    """Raise :class:`CompressionError` unless ``shape`` multiplies to ``d``."""
    if math.prod(shape) != d:
        hint_shape = balanced_shape(d, len(shape))
        hint = (
            f"for d={d} try shape={'x'.join(map(str, hint_shape))}"
            if hint_shape
            else "leave shape out to choose one automatically"
        )
        raise CompressionError(
            f"shape {'x'.join(map(str, shape))} multiplies to {math.prod(shape)}, but the "
            f"embedding has hidden size {d}",
            hint=hint,
        )


def tt_params_full_rank(shape: tuple[int, ...]) -> int:
    """Parameters of one row's TT at full (untruncated) ranks."""
    d = math.prod(shape)
    total, left = 0, 1
    for k, dim in enumerate(shape):
        right = min(left * dim, d // math.prod(shape[: k + 1]))
        total += left * dim * right
        left = right
    return total
