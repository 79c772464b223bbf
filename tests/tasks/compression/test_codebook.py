"""The codebook method: NormalFloat and k-means levels, refused budgets, artifacts."""

from __future__ import annotations

import pytest
import torch

from tasks.compression import get_method, parse_variant
from tasks.compression.codebook import CodebookEmbedding, nearest, nf_levels
from tasks.errors import CompressionError, ConfigError

#: QLoRA's NF4 levels (bitsandbytes' table), to four decimals
NF4 = [
    -1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
    0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0,
]  # fmt: skip


def _table(rows: int = 300, dim: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=gen) * torch.linspace(0.2, 2.0, dim)


def _compress(spec: str, table: torch.Tensor):
    variant = parse_variant(spec)
    return get_method(variant.method).compress(table, variant)


def test_nf4_levels_are_qloras() -> None:
    assert nf_levels(4).tolist() == pytest.approx(NF4, abs=1e-4)
    for bits in (2, 3, 5):
        levels = nf_levels(bits)
        assert levels.numel() == 1 << bits and float(levels[0]) == -1.0
        assert float(levels[-1]) == 1.0 and 0.0 in levels.tolist()


def test_codes_point_at_the_nearest_level() -> None:
    levels = torch.tensor([-1.0, -0.2, 0.0, 0.5, 1.0])
    values = torch.tensor([-2.0, -0.61, -0.59, -0.09, 0.26, 0.74, 0.76, 3.0])
    got = nearest(values, levels)
    brute = (values[:, None] - levels).abs().argmin(1)
    assert torch.equal(got, brute)


@pytest.mark.parametrize(
    ("spec", "bits_per_weight"),
    [("nf4", 4 + 16 / 64), ("codebook:book=kmeans:bits=3", 3 + 8 * 16 / 64)],
)
def test_rows_rebuild_from_the_stored_levels(spec: str, bits_per_weight: float) -> None:
    table = _table()
    result = _compress(spec, table)
    assert result.method["bits_per_weight"] == pytest.approx(bits_per_weight, rel=0.02)
    module = get_method("codebook").build_embedding(result.tensors, result.method)
    ids = torch.tensor([[0, 7], [299, 7]])
    rows = module(ids)
    assert rows.shape == (2, 2, 64)
    assert torch.equal(rows[1, 0], module.materialize()[299])
    errors = (module.materialize() - table).norm(dim=1) / table.norm(dim=1)
    assert torch.allclose(errors.double(), result.row_errors, atol=1e-5)


def test_nf_beats_affine_levels_of_the_same_bytes_on_bell_shaped_values() -> None:
    table = _table(seed=3)
    # one float16 scale per 32 values against a scale and a minimum per 64: the same bytes
    # (and the 16 levels)
    nf = _compress("codebook:book=nf:bits=4:group=32", table)
    affine = _compress("int:bits=4:group=64", table)
    assert nf.payload_bytes == affine.payload_bytes + 16 * 4
    assert float(nf.row_errors.mean()) < 0.9 * float(affine.row_errors.mean())


def test_kmeans_fits_each_group() -> None:
    # every group holds 4 distinct values: a 2-bit k-means codebook is exact
    gen = torch.Generator().manual_seed(1)
    values = torch.tensor([-1.5, -0.25, 0.125, 2.0])
    table = values[torch.randint(0, 4, (50, 32), generator=gen)]
    table[:, :4] = values  # each row holds all four
    result = _compress("codebook:book=kmeans:bits=2", table)
    assert float(result.row_errors.max()) == 0.0


def test_bad_budgets_are_refused_at_parse_time() -> None:
    with pytest.raises(ConfigError, match="book="):
        parse_variant("codebook:bits=4")
    with pytest.raises(ConfigError, match="from 2 to 8"):
        parse_variant("codebook:book=nf:bits=1")
    with pytest.raises(ConfigError, match=r"no smaller than float16.*group=513"):
        parse_variant("codebook:book=kmeans:bits=8:group=64")
    assert parse_variant("nf4").canonical == "codebook:book=nf:bits=4:group=64"


def test_a_group_that_does_not_divide_a_row_is_refused() -> None:
    with pytest.raises(CompressionError, match="does not divide"):
        _compress("codebook:book=nf:bits=4:group=48", _table())


def test_inconsistent_tensors_are_an_artifact_error() -> None:
    result = _compress("nf4", _table())
    tensors = dict(result.tensors)
    tensors["codes"] = tensors["codes"][:100]
    from tasks.errors import ArtifactError

    with pytest.raises(ArtifactError, match="codes"):
        CodebookEmbedding(tensors, 4, 64)
