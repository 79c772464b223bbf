"""tt:keep= and tt:center=: exact kept rows, exact mean, honest counts, calibration only."""

from __future__ import annotations

import pytest
import torch

from tasks import data as builtin_data
from tasks.compression import get_method, parse_variant
from tasks.compression.calibration import frequency_order, token_counts, zipf_weights
from tasks.compression.embedding import HybridTTEmbedding, in_mode
from tasks.errors import CompressionError


def _table(rows: int = 600, dim: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # a large shared offset, as trained embedding tables have
    return torch.randn(rows, dim, generator=gen) * torch.linspace(0.2, 2.0, dim) + 1.5


def _compress(spec: str, table: torch.Tensor, counts: torch.Tensor | None = None):
    variant = parse_variant(spec)
    return get_method(variant.method).compress(table, variant, token_counts=counts)


def _rebuild(result) -> torch.Tensor:
    return get_method("tt").build_embedding(result.tensors, result.method).materialize()


def _counts(rows: int, frequent: dict[int, int]) -> torch.Tensor:
    counts = torch.zeros(rows, dtype=torch.int64)
    for token, n in frequent.items():
        counts[token] = n
    return counts


def test_frequency_order_breaks_ties_by_id() -> None:
    counts = _counts(10, {7: 5, 3: 2, 9: 2})
    assert frequency_order(counts, 10).tolist() == [7, 3, 9, 0, 1, 2, 4, 5, 6, 8]
    assert frequency_order(None, 4).tolist() == [0, 1, 2, 3]
    w = zipf_weights(5)
    assert float(w.sum()) == pytest.approx(1.0) and bool((w[:-1] > w[1:]).all())


def test_kept_rows_are_exact_and_the_others_are_not() -> None:
    table = _table()
    counts = _counts(600, {500: 9, 421: 4, 77: 4})
    result = _compress("tt:rank=2:shape=4x4x4:keep=20", table, counts)
    kept = sorted([500, 421, 77, *range(17)])
    assert result.tensors["dense_ids"].tolist() == kept
    rebuilt = _rebuild(result)
    assert torch.equal(rebuilt[kept], table[kept])
    assert float(result.row_errors[kept].abs().max()) == 0.0
    others = torch.ones(600, dtype=torch.bool)
    others[kept] = False
    assert float((rebuilt[others] - table[others]).abs().max()) > 0.1
    counts_section = result.method["counts"]
    assert counts_section["dense_rows"] == 20 and counts_section["tt_rows"] == 580
    assert (
        result.params
        == result.tensors["core0"].numel()
        + result.tensors["core1"].numel()
        + result.tensors["core2"].numel()
        + 20 * 64
    )
    assert result.method["frequency"]["source"] == "calibration text"


def test_center_reconstructs_exactly_at_full_rank() -> None:
    table = _table()
    result = _compress("tt:rank=1000:shape=4x4x4:center=true", table)
    assert torch.allclose(result.tensors["mean"], table.mean(0), atol=1e-5)
    assert float((_rebuild(result) - table).abs().max()) < 1e-5
    assert float(result.row_errors.max()) < 1e-6
    plain = _compress("tt:rank=1000:shape=4x4x4", table)
    assert result.params == plain.params + 64  # the mean is a parameter
    assert result.method["counts"]["mean_params"] == 64


def test_center_and_keep_at_a_ratio_count_every_parameter() -> None:
    table = _table()
    result = _compress("tt:ratio=2:shape=4x4x4:keep=30:center=true", table)
    c = result.method["counts"]
    assert c["total_params"] == result.params == c["tt_params"] + 30 * 64 + 64
    assert 2.0 <= table.numel() / result.params <= 2.0 * 1.02
    # centering removes the shared offset, which plain TT spends ranks on
    plain = _compress("tt:ratio=2:shape=4x4x4", table)
    assert float(result.row_errors.mean()) < float(plain.row_errors.mean())


def test_keep_auto_chooses_and_records_the_number_of_dense_rows() -> None:
    table = _table(1200)
    counts = _counts(1200, {i: 100 - i for i in range(0, 100)})
    result = _compress("tt:ratio=2:shape=4x4x4:keep=auto:center=true:alloc=adaptive", table, counts)
    choice = result.method["keep_choice"]
    assert choice["auto"] and str(result.method["keep_rows"]) in choice["scores"]
    best = min(choice["scores"], key=lambda k: choice["scores"][k])
    assert int(best) == result.method["keep_rows"] > 0
    assert 2.0 <= table.numel() / result.params <= 2.0 * 1.02
    assert result.method["frequency"] == {
        "source": "calibration text",
        "tokens": 5050,
        "distinct": 100,
    }


def test_too_many_dense_rows_for_the_budget() -> None:
    with pytest.raises(CompressionError, match="alone exceed the parameter budget"):
        _compress("tt:ratio=2:shape=4x4x4:keep=400", _table())
    with pytest.raises(CompressionError, match="nothing to compress"):
        _compress("tt:rank=2:shape=4x4x4:keep=600", _table())


@pytest.mark.parametrize(
    "spec",
    [
        "tt:rank=2:shape=4x4x4:keep=25:center=true",
        "tt:eps=0.5:shape=4x4x4:center=true",
        "tt:ratio=2.5:shape=2x2x4x4:keep=40:alloc=adaptive",
    ],
)
def test_hybrid_embedding_on_the_fly_matches_materialized(spec: str) -> None:
    table = _table()
    result = _compress(spec, table)
    module = get_method("tt").build_embedding(result.tensors, result.method)
    assert isinstance(module, HybridTTEmbedding)
    ids = torch.randint(0, 600, (3, 41), generator=torch.Generator().manual_seed(2))
    ids[0, :5] = torch.tensor([0, 1, 2, 599, 24])
    dense = in_mode(module, "materialized")
    assert torch.allclose(module(ids), dense(ids), rtol=0, atol=1e-6)
    assert module.stored_params == result.params
    module.out_dtype = torch.bfloat16
    assert module(ids).dtype == torch.bfloat16


def test_counts_come_from_the_calibration_text_only(monkeypatch) -> None:
    asked: list[str] = []

    def fake_builtin_text(kind: str = "eval") -> str:
        asked.append(kind)
        if kind != "calibration":
            raise AssertionError(f"compression read the {kind} text")
        return "w9 w9 w9 w7 w7 w5 and words outside the vocabulary"

    from tests.tasks.tiny import tokenizer

    monkeypatch.setattr(builtin_data, "builtin_text", fake_builtin_text)
    counts = token_counts(tokenizer(), 256)
    assert asked == ["calibration"]
    assert counts[13].item() == 3 and counts[11].item() == 2 and counts[9].item() == 1
    assert counts[3].item() == 5  # <unk>: the five words outside the vocabulary
    assert frequency_order(counts, 256)[:5].tolist() == [3, 13, 11, 9, 0]
