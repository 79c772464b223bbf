"""K-bit codes: packing, affine groups, the int method, quantised TT cores and GGUF blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.compression import get_method, parse_variant
from tasks.compression.quant import pack, quantize_groups, unpack_at
from tasks.compression.ttquant import quantize_cores
from tasks.compression.ttsvd import tt_svd_table
from tasks.errors import CompressionError


def _table(rows: int = 400, dim: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=gen) * torch.linspace(0.05, 1.0, dim)


def _compress(spec: str, table: torch.Tensor):
    variant = parse_variant(spec)
    return get_method(variant.method).compress(table, variant)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(2, 8), count=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_pack_then_unpack_gives_the_codes_back(bits: int, count: int, seed: int) -> None:
    codes = torch.randint(0, 2**bits, (count,), generator=torch.Generator().manual_seed(seed))
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == (count * bits + 7) // 8 + 1
    assert torch.equal(unpack_at(packed, torch.arange(count) * bits, bits), codes)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_affine_error_is_at_most_half_a_step(bits: int) -> None:
    x = _table(50, 40).to(torch.float64)
    codes, scale, minimum = quantize_groups(x, bits)
    assert int(codes.min()) >= 0 and int(codes.max()) <= 2**bits - 1
    decoded = codes * scale.double()[:, None] + minimum.double()[:, None]
    # half a step, plus the float16 rounding of the minimum
    bound = scale.double()[:, None] / 2 + minimum.double().abs()[:, None] * 2**-10
    assert bool(((decoded - x).abs() <= bound + 1e-12).all())


def test_more_bits_and_smaller_groups_lose_less() -> None:
    table = _table()
    errors = {
        spec: float(_compress(spec, table).row_errors.mean())
        for spec in ("int:bits=3", "int:bits=4", "int:bits=6", "int:bits=4:group=16")
    }
    assert errors["int:bits=6"] < errors["int:bits=4"] < errors["int:bits=3"]
    assert errors["int:bits=4:group=16"] < errors["int:bits=4"]


def test_int_bytes_are_the_packed_codes_plus_fp16_scales() -> None:
    table = _table(100, 64)
    result = _compress("int:bits=4:group=16", table)
    # 64 four-bit codes = 32 bytes a row, 4 groups of a float16 scale and minimum
    assert result.payload_bytes == 100 * 32 + 1 + 100 * 4 * 2 * 2
    assert result.method["bits_per_weight"] == pytest.approx(result.payload_bytes * 8 / 6400)


def test_a_group_that_does_not_divide_the_width_is_refused_with_the_choices() -> None:
    with pytest.raises(CompressionError) as info:
        _compress("int:bits=4:group=48", _table(10, 64))
    assert "group=48 does not divide the hidden size 64" in str(info.value)
    assert "2, 4, 8, 16, 32, 64" in info.value.hint


@pytest.mark.parametrize("cores", ["int8", "int6", "int4"])
def test_quantised_cores_stay_close_to_the_float_cores(cores: str) -> None:
    table = _table()
    plain = _compress("tt:rank=3:shape=4x4x4", table)
    quantised = _compress(f"tt:rank=3:shape=4x4x4:cores={cores}", table)
    bits = int(cores[3:])
    assert quantised.method["core_bits"] == bits
    # codes of `bits` bits for every value, a float16 scale and minimum per core of a token
    values = sum(int(plain.tensors[f"core{k}"].numel()) for k in range(3))
    stored = (values * bits + 3 * 8) / 8 + 4 * 3 * table.shape[0]
    assert quantised.params == pytest.approx(stored / 4, abs=2)
    extra = float(quantised.row_errors.mean() - plain.row_errors.mean())
    assert 0 <= extra < {8: 0.01, 6: 0.03, 4: 0.15}[bits]


def test_each_token_core_has_its_own_scale() -> None:
    cores = tt_svd_table(_table(30), (4, 4, 4), eps=0.3).cores
    tensors = quantize_cores(cores, 4)
    assert tensors["scale"].shape == (30, 3) and tensors["scale"].dtype == torch.float16
    assert tensors["minimum"].shape == (30, 3)
    # ragged ranks: the code streams hold exactly the stored values, plus a slack byte
    for k in range(3):
        values = int(cores.core_sizes()[:, k].sum())
        assert tensors[f"codes{k}"].numel() == (values * 4 + 7) // 8 + 1


@pytest.mark.parametrize("kind", ["q8_0", "q4_0", "q4_1"])
def test_gguf_blocks_decode_as_the_gguf_package_does(kind: str) -> None:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    table = _table(50, 64)
    result = _compress(f"gguf:type={kind}", table)
    blocks = result.tensors["blocks"].numpy()
    reference = dequantize(blocks, GGMLQuantizationType[kind.upper()]).reshape(50, 64)
    ours = get_method("gguf").build_embedding(result.tensors, result.method).materialize()
    assert np.array_equal(ours.numpy(), reference.astype(np.float32))
    bits = {"q8_0": 8.5, "q4_0": 4.5, "q4_1": 5.0}[kind]
    assert result.method["bits_per_weight"] == pytest.approx(bits)


def test_gguf_needs_whole_blocks() -> None:
    with pytest.raises(CompressionError, match="not a multiple of 32"):
        _compress("gguf:type=q8_0", _table(10, 48))
