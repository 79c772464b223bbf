"""Affine integer quantisation of K bits (2..8), packed into bytes; device side (torch only).

A group of values ``x`` is stored as codes ``q = round((x - minimum) / scale)`` in
``[0, 2^K - 1]`` with ``scale = (max - min) / (2^K - 1)``; ``scale`` and ``minimum`` are
float16, and the codes are computed against the float16 values, so ``q * scale + minimum``
is exactly what a device rebuilds.

Codes are packed little-endian into a flat byte stream: value ``i`` occupies bits
``[i*K, (i+1)*K)``. Any code is read back from its bit position with two byte loads and a shift
(:func:`unpack_at`), so the on-the-fly modules gather only the codes a batch needs.
"""

from __future__ import annotations

import torch

BITS = tuple(range(2, 9))
#: the smallest positive float16 (subnormal); a scale never rounds below it
_FP16_TINY = 2.0**-24


def levels(bits: int) -> int:
    """Largest code of ``bits`` bits."""
    return (1 << bits) - 1


def affine_params(
    low: torch.Tensor, high: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """float16 ``(scale, minimum)`` of groups spanning ``[low, high]``."""
    minimum = low.to(torch.float16)
    span = high.to(torch.float64) - minimum.to(torch.float64)
    scale = (span / levels(bits)).to(torch.float16)
    # a rounded scale may leave the top value just out of reach: round it up one step
    short = scale.to(torch.float64) * levels(bits) + minimum.to(torch.float64) < high.to(
        torch.float64
    )
    scale = torch.where(short, torch.nextafter(scale, torch.full_like(scale, torch.inf)), scale)
    scale = torch.where(span > 0, scale.clamp_min(_FP16_TINY), torch.ones_like(scale))
    return scale, minimum


def codes_of(
    x: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor, bits: int
) -> torch.Tensor:
    """int64 codes of ``x`` against broadcastable float16 ``scale`` and ``minimum``."""
    q = (x.to(torch.float64) - minimum.to(torch.float64)) / scale.to(torch.float64)
    return q.round().clamp(0, levels(bits)).to(torch.int64)


def dequantize_codes(
    codes: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor
) -> torch.Tensor:
    """float32 values of codes against broadcastable float16 ``scale`` and ``minimum``."""
    return codes.to(torch.float32) * scale.to(torch.float32) + minimum.to(torch.float32)


def row_stride_bits(dim: int, bits: int) -> int:
    """Bits from one row's first code to the next's when every row starts on a byte."""
    return (dim * bits + 7) // 8 * 8


def code_positions(ids: torch.Tensor, dim: int, bits: int) -> torch.Tensor:
    """(n, dim) bit positions of the codes of byte-aligned rows ``ids`` of width ``dim``."""
    stride = row_stride_bits(dim, bits)
    return ids.to(torch.int64)[:, None] * stride + torch.arange(dim, dtype=torch.int64) * bits


def pack(codes: torch.Tensor, bits: int, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Pack codes (each < 2^bits) into a uint8 stream (see the module docstring).

    Code ``i`` of the flattened ``codes`` starts at bit ``positions[i]`` (default ``i*bits``).
    """
    flat = codes.reshape(-1).to(torch.int64)
    if positions is None:
        positions = torch.arange(flat.numel(), dtype=torch.int64) * bits
    pos = positions.reshape(-1).to(torch.int64)
    end_bits = int(pos.max()) + bits if pos.numel() else 0
    out = torch.zeros((end_bits + 7) // 8 + 1, dtype=torch.int64)
    byte, shift = pos >> 3, pos & 7
    word = flat << shift  # at most 15 bits: spans this byte and the next
    # the bit ranges of different codes never overlap, so adding is or-ing
    out.index_add_(0, byte, word & 0xFF)
    out.index_add_(0, byte + 1, word >> 8)
    return out.to(torch.uint8)


def unpack_at(packed: torch.Tensor, positions: torch.Tensor, bits: int) -> torch.Tensor:
    """int64 codes starting at bit ``positions`` (any shape) of a packed stream."""
    pos = positions.to(torch.int64)
    byte = pos >> 3
    if bits == 8 and not bool((pos & 7).any()):
        return packed[byte].to(torch.int64)
    word = packed[byte].to(torch.int64) | (packed[byte + 1].to(torch.int64) << 8)
    return (word >> (pos & 7)) & levels(bits)


def quantize_groups(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, ...]:
    """Quantise the last axis of ``x`` (..., n) as one group per leading index.

    Returns ``(codes, scale, minimum)``: int64 codes of ``x``'s shape and float16 scale and
    minimum of shape ``x.shape[:-1]``.
    """
    x64 = x.to(torch.float64)
    scale, minimum = affine_params(x64.amin(-1), x64.amax(-1), bits)
    return codes_of(x64, scale[..., None], minimum[..., None], bits), scale, minimum
