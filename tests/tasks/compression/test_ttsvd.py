"""Batched TT-SVD: exactness, the eps bound, ragged storage, and agreement with tensorly."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.compression.base import relative_row_errors
from tasks.compression.cores import TTCores
from tasks.compression.shapes import balanced_shape, factorizations, tt_params_full_rank
from tasks.compression.tensorly_impl import tt_loop_table
from tasks.compression.ttsvd import tt_svd_table


def _table(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=gen) * torch.linspace(0.2, 2.0, dim)


def _measured(table: torch.Tensor, cores: TTCores) -> torch.Tensor:
    return relative_row_errors(table, cores.reconstruct(torch.float64))


@pytest.mark.parametrize("shape", [(4, 4, 4), (2, 4, 8), (2, 2, 4, 4), (2, 2, 2, 2, 4)])
def test_full_ranks_reproduce_every_row(shape: tuple[int, ...]) -> None:
    table = _table(300, math.prod(shape))
    result = tt_svd_table(table, shape, max_ranks=(10_000,) * (len(shape) - 1), chunk_rows=64)
    assert float(_measured(table, result.cores).max()) < 1e-6
    assert result.cores.num_params == 300 * tt_params_full_rank(shape)


@pytest.mark.parametrize("eps", [0.05, 0.3, 0.6])
def test_eps_bound_holds_for_every_row(eps: float) -> None:
    table = _table(500, 64, seed=1)
    result = tt_svd_table(table, (4, 4, 4), eps=eps, chunk_rows=128)
    measured = _measured(table, result.cores)
    assert float(measured.max()) <= eps + 1e-6
    # the reported decomposition error is the measured one (up to float32 storage)
    assert torch.allclose(measured, result.row_errors, atol=1e-6)
    if eps >= 0.3:  # adaptive: the ranks differ between rows
        assert torch.unique(result.cores.ranks, dim=0).shape[0] > 1


def test_ragged_ranks_are_stored_without_padding() -> None:
    table = _table(400, 64, seed=2)
    cores = tt_svd_table(table, (4, 4, 4), eps=0.4, chunk_rows=100).cores
    r = cores.ranks
    expected = int((r[:, 0] * 4 * r[:, 1] + r[:, 1] * 4 * r[:, 2] + r[:, 2] * 4 * r[:, 3]).sum())
    assert cores.num_params == expected == sum(c.numel() for c in cores.cores)
    padded = 400 * int(r[:, 1].max() * 4 + r[:, 1].max() * 4 * r[:, 2].max() + r[:, 2].max() * 4)
    assert cores.num_params < padded


def test_chunking_and_threads_do_not_change_the_result() -> None:
    table = _table(333, 64, seed=3)
    a = tt_svd_table(table, (4, 4, 4), eps=0.3, chunk_rows=333, workers=1)
    b = tt_svd_table(table, (4, 4, 4), eps=0.3, chunk_rows=50, workers=2)
    assert torch.equal(a.cores.ranks, b.cores.ranks)
    for x, y in zip(a.cores.cores, b.cores.cores, strict=True):
        assert torch.allclose(x, y, atol=1e-5)


def test_rank_cap_per_bond() -> None:
    table = _table(50, 64)
    cores = tt_svd_table(table, (4, 4, 4), max_ranks=(2, 3)).cores
    assert cores.ranks.tolist() == [[1, 2, 3, 1]] * 50


@pytest.mark.parametrize(
    ("shape", "ranks"), [((4, 4, 4), (3, 3)), ((2, 4, 8), (2, 5)), ((2, 2, 4, 4), (2, 3, 3))]
)
def test_agrees_with_the_tensorly_loop(shape: tuple[int, ...], ranks: tuple[int, ...]) -> None:
    table = _table(200, math.prod(shape), seed=4)
    ours = tt_svd_table(table, shape, max_ranks=ranks, chunk_rows=64)
    ref = tt_loop_table(table, shape, max_ranks=ranks)
    assert torch.equal(ours.cores.ranks, ref.cores.ranks)
    e_ours, e_ref = _measured(table, ours.cores), ref.row_errors
    assert float(e_ref.min()) > 0.01  # truncation really happened
    assert float(((e_ours - e_ref).abs() / e_ref).max()) <= 1e-4


def test_tensorly_loop_on_selected_rows() -> None:
    table = _table(100, 64)
    rows = torch.tensor([5, 17, 99])
    ref = tt_loop_table(table, (4, 4, 4), max_ranks=(2, 2), rows=rows)
    ours = tt_svd_table(table[rows], (4, 4, 4), max_ranks=(2, 2))
    assert torch.allclose(ref.row_errors, ours.row_errors, rtol=1e-4)


def test_zero_rows_survive() -> None:
    table = _table(20, 64)
    table[3] = 0
    for kwargs in ({"eps": 0.2}, {"max_ranks": (4, 4)}):
        result = tt_svd_table(table, (4, 4, 4), **kwargs)
        assert torch.isfinite(result.cores.cores[0]).all()
        assert float(result.cores.reconstruct()[3].abs().max()) == 0.0


def test_shapes() -> None:
    assert balanced_shape(576, 3) == (8, 8, 9)
    assert balanced_shape(576, 4) == (4, 4, 6, 6)
    assert balanced_shape(768, 3) == (8, 8, 12)
    assert balanced_shape(37, 3) is None
    assert all(math.prod(f) == 96 for f in factorizations(96, 3))
    assert (4, 4, 6) in factorizations(96, 3)
