"""The tt, svd, int and gguf methods behind the common interface, at a parameter budget."""

from __future__ import annotations

import pytest
import torch

from tasks.compression import get_method, parse_variant
from tasks.errors import CompressionError


def _table(rows: int = 600, dim: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=gen) * torch.linspace(0.2, 2.0, dim)


def _compress(spec: str, table: torch.Tensor):
    variant = parse_variant(spec)
    return get_method(variant.method).compress(table, variant)


@pytest.mark.parametrize(
    "spec",
    [
        "tt:ratio=2:shape=4x4x4",
        "tt:ratio=1.5:shape=2x2x4x4",
        "tt:ratio=3",
        "svd:ratio=2",
        "svd:ratio=4",
    ],
)
def test_ratio_targeting_within_two_percent(spec: str) -> None:
    # svd's rank is an integer: a table where one rank step is well under 2%
    table = _table(4000, 128) if spec.startswith("svd") else _table()
    result = _compress(spec, table)
    target = parse_variant(spec).get("ratio")
    achieved = table.numel() / result.params
    assert target <= achieved <= target * 1.02, achieved


def test_ratio_trades_accuracy_monotonically() -> None:
    table = _table()
    errors = [
        float(_compress(f"tt:ratio={r}:shape=4x4x4", table).row_errors.mean()) for r in (1.2, 2, 3)
    ]
    assert errors == sorted(errors)


def test_tt_ratio_out_of_reach() -> None:
    with pytest.raises(CompressionError, match="out of reach"):
        _compress("tt:ratio=50:shape=4x4x4", _table())


def test_auto_shape_is_recorded() -> None:
    result = _compress("tt:eps=0.3", _table(dim=48))
    choice = result.method["shape_choice"]
    assert choice["auto"] and choice["candidates"] == ["3x4x4", "2x2x3x4", "2x2x2x2x3"]
    assert "x".join(map(str, result.method["shape"])) in choice["candidates"]
    assert _compress("tt:rank=4", _table(dim=48)).method["shape"] == [3, 4, 4]


def test_shape_must_match_the_hidden_size() -> None:
    with pytest.raises(CompressionError, match="multiplies to 72") as info:
        _compress("tt:rank=4:shape=2x4x9", _table())
    assert "4x4x4" in info.value.hint


def test_rank_list_must_fit_the_shape() -> None:
    with pytest.raises(CompressionError, match="2 bonds"):
        _compress("tt:rank=2,3,4:shape=4x4x4", _table())


@pytest.mark.parametrize("spec", ["tt:eps=0.3:impl=tensorly", "tt:ratio=2:impl=tensorly"])
def test_tensorly_impl_takes_a_rank_only(spec: str) -> None:
    with pytest.raises(CompressionError, match="rank cap only"):
        _compress(spec, _table())


def test_tt_needs_a_truncation() -> None:
    with pytest.raises(CompressionError, match="rank=, eps= or ratio="):
        _compress("tt:shape=4x4x4", _table())


def test_svd_is_the_optimal_low_rank_projection() -> None:
    table = _table(200, 32)
    result = _compress("svd:rank=5", table)
    u, s, vh = torch.linalg.svd(table.double(), full_matrices=False)
    best = (u[:, :5] * s[:5]) @ vh[:5]
    ours = result.tensors["left"].double() @ result.tensors["right"].double()
    assert torch.allclose(ours, best, atol=1e-4)
    assert result.params == 5 * (200 + 32)


def test_int8_roundtrip_error_is_small() -> None:
    table = _table()
    result = _compress("int8", table)
    assert result.tensors["codes"].dtype == torch.uint8
    assert float(result.row_errors.max()) < 0.01
    # one byte per value, a float16 scale and minimum per row, one byte of read slack
    assert result.payload_bytes == table.numel() + 4 * table.shape[0] + 1
    assert result.params == result.payload_bytes // 4


def test_dense_has_nothing_to_compress() -> None:
    with pytest.raises(CompressionError):
        _compress("dense", _table())


def test_svd_layer0_is_optimal_in_the_metric_layer0_sees() -> None:
    table = _table(200, 32)
    gain = torch.linspace(0.05, 3.0, 32)
    variant = parse_variant("svd:rank=5:metric=layer0")
    assert variant.needs_layer0_gain and not parse_variant("svd:rank=5").needs_layer0_gain
    method = get_method("svd")
    weighted = method.compress(table, variant, layer0_gain=gain)
    plain = method.compress(table, parse_variant("svd:rank=5"))
    assert weighted.method["metric"] == "layer0" and weighted.params == plain.params

    def seen_by_layer0(result) -> float:
        approx = result.tensors["left"].double() @ result.tensors["right"].double()
        x = table.double()
        rms = x.pow(2).mean(1, keepdim=True).sqrt()
        return float(((x - approx) * gain.double() / rms).norm())

    def plain_error(result) -> float:
        approx = result.tensors["left"].double() @ result.tensors["right"].double()
        return float((table.double() - approx).norm())

    # each is the optimum of its own metric, so strictly better there than the other
    assert seen_by_layer0(weighted) < seen_by_layer0(plain)
    assert plain_error(plain) < plain_error(weighted)
    with pytest.raises(CompressionError, match="layer0"):
        method.compress(table, variant)  # no gain given


@pytest.mark.parametrize("extra", ["", ":cores=int8", ":keep=20"])
def test_tt_layer0_weights_channels_and_undoes_it(extra: str) -> None:
    table = _table(300, 64)
    gain = torch.linspace(0.05, 3.0, 64)
    method = get_method("tt")
    plain = method.compress(table, parse_variant(f"tt:rank=2:shape=4x4x4{extra}"))
    variant = parse_variant(f"tt:rank=2:shape=4x4x4{extra}:metric=layer0")
    assert variant.needs_layer0_gain
    weighted = method.compress(table, variant, layer0_gain=gain)
    assert weighted.method["metric"] == "layer0"
    assert weighted.tensors["channel_scale"].shape == (64,)
    module = method.build_embedding(weighted.tensors, weighted.method)
    rebuilt = module.materialize()
    assert torch.equal(module(torch.tensor([[7, 299]]))[0], rebuilt[[7, 299]])
    errors = (rebuilt - table).norm(dim=1) / table.norm(dim=1)
    assert torch.allclose(errors.double(), weighted.row_errors, atol=1e-5)

    def seen_by_layer0(result) -> float:
        approx = method.build_embedding(result.tensors, result.method).materialize().double()
        x = table.double()
        rms = x.pow(2).mean(1, keepdim=True).sqrt()
        return float(((x - approx) * gain.double() / rms).norm())

    assert seen_by_layer0(weighted) < seen_by_layer0(plain)
