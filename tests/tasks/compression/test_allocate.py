"""alloc=adaptive/weighted: budget met, optimal against uniform eps, exact predicted errors."""

from __future__ import annotations

import pytest
import torch

from tasks.compression import get_method, parse_variant
from tasks.compression.allocate import allocate, rank_options, tt_svd_budget
from tasks.compression.cores import merge_cores
from tasks.compression.ttsvd import tt_svd_table
from tasks.errors import CompressionError


def _heterogeneous(rows: int = 800, seed: int = 0) -> torch.Tensor:
    """Rows of very different TT spectra: exact rank 1, low rank plus noise, pure noise."""
    gen = torch.Generator().manual_seed(seed)
    a, b, c = (torch.randn(rows, 4, generator=gen) for _ in range(3))
    rank1 = torch.einsum("vi,vj,vk->vijk", a, b, c).reshape(rows, 64)
    noise = torch.randn(rows, 64, generator=gen)
    third = rows // 3
    table = noise.clone()
    table[:third] = rank1[:third]
    table[third : 2 * third] = rank1[third : 2 * third] + 0.3 * noise[third : 2 * third]
    return table * (0.5 + torch.rand(rows, 1, generator=gen))  # and different norms


def _sq_error(table: torch.Tensor, result) -> float:
    module = get_method("tt").build_embedding(result.tensors, result.method)
    return float(((module.materialize().double() - table.double()) ** 2).sum())


@pytest.mark.parametrize(("ratio", "shape"), [(2.0, "4x4x4"), (1.5, "4x4x4"), (3.0, "2x2x4x4")])
def test_adaptive_meets_the_ratio_with_less_error_than_uniform(ratio, shape) -> None:
    table = _heterogeneous()
    variant = parse_variant(f"tt:ratio={ratio:g}:shape={shape}")
    uniform = get_method("tt").compress(table, variant)
    adaptive = get_method("tt").compress(
        table, parse_variant(f"{variant.canonical}:alloc=adaptive")
    )
    achieved = table.numel() / adaptive.params
    assert ratio <= achieved <= ratio * 1.02, achieved
    assert _sq_error(table, adaptive) < 0.9 * _sq_error(table, uniform)
    stats = adaptive.method["rank_stats"]
    assert not stats["uniform"] and stats["min"][0] == 1
    assert adaptive.method["allocation"]["predicted_squared_error"] == pytest.approx(
        _sq_error(table, adaptive), rel=1e-4
    )


def test_rank_options_are_the_exact_truncation_errors() -> None:
    table = _heterogeneous(90)
    options = rank_options(table, (4, 4, 4))
    assert options.patterns.shape == (4 + 3 * 4, 4)  # r1 <= 4; r2 <= 4 (r1 = 1: r2 <= 4)
    assert bool((options.params[1:] >= options.params[:-1]).all())
    for p in (0, 5, len(options.patterns) - 1):
        caps = tuple(int(r) for r in options.patterns[p, 1:-1])
        cores = tt_svd_table(table, (4, 4, 4), max_ranks=caps).cores
        measured = ((cores.reconstruct(torch.float64) - table.double()) ** 2).sum(1)
        assert torch.allclose(measured, options.err2[:, p], rtol=1e-6, atol=1e-9)
        assert int(options.params[p]) * 90 == cores.num_params


def test_weights_move_parameters_to_the_heavy_rows() -> None:
    table = torch.randn(400, 64, generator=torch.Generator().manual_seed(5))
    weights = torch.ones(400, dtype=torch.float64)
    weights[:100] = 50.0
    result, plan = tt_svd_budget(table, (4, 4, 4), 400 * 64 / 2.5, weights=weights)
    errors = result.row_errors
    assert float(errors[:100].mean()) < 0.5 * float(errors[100:].mean())
    assert plan.params == result.cores.num_params <= 400 * 64 / 2.5


def test_allocation_out_of_reach() -> None:
    options = rank_options(torch.randn(50, 64), (4, 4, 4))
    with pytest.raises(CompressionError, match="out of reach"):
        allocate(options, budget=50 * 11)
    generous = allocate(options, budget=1e9)  # everything fits: the smallest exact ranks
    assert generous.error == pytest.approx(0.0, abs=1e-9)


def test_merge_cores_restores_the_row_order() -> None:
    table = torch.randn(120, 64, generator=torch.Generator().manual_seed(1))
    whole = tt_svd_table(table, (4, 4, 4), eps=0.4).cores
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(2))
    parts = [
        (rows, tt_svd_table(table[rows], (4, 4, 4), eps=0.4).cores)
        for rows in (perm[:50], perm[50:51], perm[51:])
    ]
    merged = merge_cores(parts, 120)
    merged.validate()
    assert torch.equal(merged.ranks, whole.ranks)
    assert torch.allclose(merged.reconstruct(), whole.reconstruct(), atol=1e-5)
    with pytest.raises(ValueError, match="cover"):
        merge_cores(parts[:2], 120)
