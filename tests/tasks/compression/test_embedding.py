"""Compressed embedding modules: on-the-fly and materialized give the same embeddings."""

from __future__ import annotations

import pytest
import torch

from tasks.compression import get_method, parse_variant
from tasks.compression.embedding import TTEmbedding, in_mode, resident_bytes
from tasks.compression.ttsvd import tt_svd_table
from tasks.errors import ConfigError


def _table(rows: int = 300, dim: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(rows, dim, generator=gen) * torch.linspace(0.2, 2.0, dim)


def _module(spec: str, table: torch.Tensor) -> torch.nn.Module:
    variant = parse_variant(spec)
    method = get_method(variant.method)
    result = method.compress(table, variant)
    return method.build_embedding(result.tensors, result.method, dtype=torch.float32)


@pytest.mark.parametrize(
    "spec",
    [
        "tt:rank=3:shape=4x4x4",
        "tt:eps=0.4:shape=4x4x4",
        "tt:eps=0.3:shape=2x2x4x4",
        "svd:rank=8",
        "int8",
        "int:bits=3:group=16",
        "int:bits=5",
        "gguf:type=q4_0",
        "tt:rank=3:shape=4x4x4:cores=int4",
        "tt:eps=0.4:shape=4x4x4:cores=int6",
        "tt:ratio=2:shape=4x4x4:keep=20:center=true:cores=int8",
    ],
)
def test_on_the_fly_matches_materialized(spec: str) -> None:
    table = _table()
    module = _module(spec, table)
    dense = in_mode(module, "materialized")
    assert isinstance(dense, torch.nn.Embedding)
    ids = torch.randint(0, 300, (4, 37), generator=torch.Generator().manual_seed(1))
    fly = module(ids)
    assert fly.shape == (4, 37, 64)
    assert torch.allclose(fly, dense(ids), rtol=0, atol=1e-6)


def test_tt_embedding_reproduces_the_reconstruction() -> None:
    table = _table()
    cores = tt_svd_table(table, (4, 4, 4), eps=0.35).cores
    module = TTEmbedding(cores)
    assert len(module.rank_patterns) > 1
    ids = torch.tensor([[0, 5, 5, 299], [17, 3, 2, 1]])
    assert torch.allclose(module(ids), cores.reconstruct()[ids], atol=1e-6)


def test_on_the_fly_memory_drops_by_the_ratio() -> None:
    table = _table(2000, 64)
    cores = tt_svd_table(table, (4, 4, 4), max_ranks=(2, 2)).cores
    module = TTEmbedding(cores)
    dense_bytes = table.numel() * 4
    ratio = table.numel() / cores.num_params
    # cores plus two int64 lookup entries per token
    assert resident_bytes(module) <= dense_bytes / ratio + 2000 * 16
    assert resident_bytes(in_mode(module, "materialized")) == dense_bytes


def test_output_dtype_follows_the_model() -> None:
    module = _module("tt:rank=2:shape=4x4x4", _table())
    module.out_dtype = torch.bfloat16
    assert module(torch.tensor([1, 2])).dtype == torch.bfloat16


def test_unknown_mode() -> None:
    with pytest.raises(ConfigError, match="on-the-fly/materialized"):
        in_mode(_module("int8", _table()), "lazy")
