"""``mixed:bits=B``: budgets, allocation by importance, packing, rows and tied heads."""

from __future__ import annotations

import pytest
import torch

from tasks.compression import get_method, parse_variant
from tasks.compression.head import CompressedHead
from tasks.compression.mixed import (
    WIDTHS,
    allocate,
    bits_range,
    int4_layout,
    pack_bits,
    unpack_bits,
)
from tasks.errors import CompressionError, ConfigError


def _table(rows: int = 640, dim: int = 128, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(rows, dim, generator=gen) * 0.05
    table[:, 3] *= 20  # an outlier channel, as real embedding tables have
    return table


def _compress(spec: str, table: torch.Tensor, importance: torch.Tensor | None = None):
    variant = parse_variant(spec)
    if importance is None:
        importance = torch.ones(table.shape[0], dtype=torch.float64)
    gain = torch.ones(table.shape[1])
    return get_method("mixed").compress(table, variant, importance=importance, layer0_gain=gain)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 8])
def test_bit_packing_round_trips(width: int) -> None:
    gen = torch.Generator().manual_seed(width)
    codes = torch.randint(0, 1 << width, (37, 13), generator=gen).to(torch.uint8)
    packed = pack_bits(codes, width)
    assert packed.numel() == -(-codes.numel() * width // 8)
    assert torch.equal(unpack_bits(packed, width, codes.numel()).reshape(37, 13), codes)


@pytest.mark.parametrize("bits", [3.0, 4.0, 5.5, 8.0])
def test_budget_is_kept_and_spent(bits: float) -> None:
    table = _table()
    result = _compress(f"mixed:bits={bits}", table)
    used = result.method["bits_per_weight"]
    assert used <= bits + 1e-9
    # what is stored is what the budget counts (bytes rounded up per tensor)
    assert result.payload_bytes * 8 <= bits * table.numel() + 8 * 16
    # the greedy fill leaves less than one row upgrade unspent
    assert bits - used < 6.0 * 128 / table.numel() + 0.05


def test_more_bits_less_error() -> None:
    table = _table()
    errors = [float(_compress(f"mixed:bits={b}", table).row_errors.mean()) for b in (3, 4, 6)]
    assert errors[0] > errors[1] > errors[2]


def test_important_tokens_get_more_bits() -> None:
    table = _table()
    importance = torch.ones(640, dtype=torch.float64)
    importance[:64] = 1000.0
    result = _compress("mixed:bits=3.5:power=1", table, importance)
    errors = result.row_errors
    assert float(errors[:64].mean()) < 0.5 * float(errors[64:].mean())
    alloc = result.method["allocation"]
    assert sum(a["rows"] for a in alloc.values()) == 640
    assert alloc["8"]["importance_share"] > 0.5


def test_allocation_minimises_the_weighted_error() -> None:
    # against brute force on a tiny problem
    gen = torch.Generator().manual_seed(3)
    errors = torch.rand(6, 3, generator=gen, dtype=torch.float64).sort(dim=1, descending=True)[0]
    importance = torch.rand(6, generator=gen, dtype=torch.float64)
    costs = torch.tensor([2.0, 3.0, 5.0], dtype=torch.float64)
    budget = 19.0
    got = allocate(errors, importance, costs, budget)
    best = None
    for n in range(3**6):
        choice = torch.tensor([(n // 3**i) % 3 for i in range(6)])
        if float(costs[choice].sum()) <= budget:
            value = float((importance * errors[torch.arange(6), choice]).sum())
            best = value if best is None else min(best, value)
    value = float((importance * errors[torch.arange(6), got]).sum())
    assert float(costs[got].sum()) <= budget
    assert value <= best * 1.15  # Lagrangian + greedy fill: near the optimum


def test_out_of_range_budgets_are_refused_at_parse_time() -> None:
    for spec in ("mixed:bits=0", "mixed:bits=-1", "mixed:bits=17", "mixed:bits=x"):
        with pytest.raises(ConfigError, match="bits="):
            parse_variant(spec)
    with pytest.raises(ConfigError, match="needs bits="):
        parse_variant("mixed")
    with pytest.raises(ConfigError, match="group"):
        parse_variant("mixed:bits=4:group=48")


def test_unmeetable_budget_names_the_closest_ratio() -> None:
    with pytest.raises(ConfigError, match=r"closest achievable ratio is about 12.8x"):
        parse_variant("mixed:bits=2.2")
    low, _ = bits_range(128, 64)
    # the parse-time floor ignores the width tag; compress gives the exact figure
    spec = parse_variant("mixed:bits=2.5")
    with pytest.raises(CompressionError, match=r"closest achievable ratio is 12.7x"):
        get_method("mixed").compress(
            _table(), spec, importance=torch.ones(640), layer0_gain=torch.ones(128)
        )
    assert low == pytest.approx(2.5 + 2 / 128)


def test_group_must_divide_the_width() -> None:
    with pytest.raises(CompressionError, match="does not divide"):
        _compress("mixed:bits=4:group=128", _table(dim=96))


def test_model_importance_is_required() -> None:
    with pytest.raises(CompressionError, match="importance=model"):
        get_method("mixed").compress(_table(), parse_variant("mixed:bits=4"))


def _embedding(result):
    return get_method("mixed").build_embedding(result.tensors, result.method, dtype=torch.float32)


def test_rows_and_materialize_match_the_compression() -> None:
    table = _table()
    result = _compress("mixed:bits=4", table)
    module = _embedding(result)
    full = module.materialize()
    rel = (full - table).norm(dim=1) / table.norm(dim=1)
    assert torch.allclose(rel.double(), result.row_errors, atol=1e-5)
    ids = torch.tensor([[5, 600, 5], [0, 1, 2]])
    assert torch.equal(module(ids), full[ids])


@pytest.mark.skipif(int4_layout() is None, reason="torch's int4 kernel layout is unknown here")
def test_int4_layout_rows_equal_own_layout() -> None:
    table = _table(rows=200)  # not a multiple of the kernel's block: padded
    module = _embedding(_compress("mixed:bits=3.5", table))
    before = module.materialize()
    kernel = module._packed_kernel()
    module.adopt("int4pack+int8pack-bf16")
    assert module.low_block is not None
    assert torch.equal(module.materialize(), before)
    x = torch.randn(3, 128)
    assert torch.allclose(
        kernel(x), x @ before.T, rtol=0.02, atol=0.02 * float((x @ before.T).abs().max())
    )


@pytest.mark.parametrize("only", [None, "mixed-chunked-fp32", "mixed-chunked-bf16"])
def test_head_logits_agree_with_the_rows(only) -> None:
    table = _table()
    module = _embedding(_compress("mixed:bits=4", table))
    head = CompressedHead(module, only=only)
    x = torch.randn(2, 5, 128)
    exact = x @ module.materialize().T
    got = head(x)
    assert got.shape == (2, 5, 640)
    assert float((got - exact).abs().max()) <= 0.02 * float(exact.abs().max())
    assert head.choice.chosen in head.choice.decode_s
    assert set(head.choice.decode_s) <= {c.name for c in module.head_kernels()}


def test_allocation_is_recorded() -> None:
    result = _compress("mixed:bits=4", _table())
    method = result.method
    assert method["widths"] == list(WIDTHS)
    assert method["importance"] == "model"
    assert set(method["allocation"]) == {str(w) for w in WIDTHS}


def test_layer0_metric_weighs_channels_and_row_scale() -> None:
    table = _table()
    table[:320] *= 10  # loud rows: the same absolute error matters less after the norm
    gain = torch.ones(128)
    spec = parse_variant("mixed:bits=3.5:power=1:metric=layer0")
    ones = torch.ones(640, dtype=torch.float64)
    result = get_method("mixed").compress(table, spec, importance=ones, layer0_gain=gain)
    assert result.method["metric"] == "layer0"
    plain = _compress("mixed:bits=3.5:metric=l2", table).method["allocation"]
    # under l2 the loud rows take the wide codes; relative to their scale they need not
    loud_wide = result.row_errors[:320].mean() / result.row_errors[320:].mean()
    assert result.method["allocation"] != plain
    assert 0.5 < float(loud_wide) < 2.0
    with pytest.raises(CompressionError, match="metric=layer0 needs"):
        get_method("mixed").compress(table, spec, importance=ones)


def test_power_flattens_the_importance() -> None:
    table = _table()
    importance = torch.logspace(0, -8, 640, dtype=torch.float64)
    sharp = _compress("mixed:bits=3.5:power=1", table, importance).method["allocation"]
    flat = _compress("mixed:bits=3.5:power=0", table, importance).method["allocation"]
    uniform = _compress("mixed:bits=3.5:importance=uniform", table).method["allocation"]
    assert flat == {
        k: {**v, "importance_share": flat[k]["importance_share"]} for k, v in uniform.items()
    }
    assert sharp["8"]["rows"] > flat["8"]["rows"]
    with pytest.raises(ConfigError, match="power="):
        parse_variant("mixed:bits=4:power=3")


@pytest.mark.parametrize("rows", [64, 300, 20_000])
def test_chunked_int4_packing_is_torchs_layout(rows: int) -> None:
    from tasks.compression.mixed import int4_layout, pack_int4

    block = int4_layout()
    if block is None:
        pytest.skip("torch's int4 packing is not available in this build")
    codes = (torch.arange(rows * 64, dtype=torch.int32).reshape(rows, 64) * 7 + rows) % 16
    padded = -(-rows // block) * block
    whole = torch.cat([codes, torch.zeros(padded - rows, 64, dtype=torch.int32)])
    expected = torch._convert_weight_to_int4pack_for_cpu(whole, 1)
    got = pack_int4(lambda a, b: codes[a:b].to(torch.uint8), rows, block, 64)
    assert torch.equal(got.reshape(-1), expected.reshape(-1))
