"""``int``: affine K-bit quantisation of every row (or of groups of G values in a row).

``int:bits=K`` gives each row one float16 scale and minimum; ``int:bits=K:group=G`` one
per G consecutive values (G must divide the hidden size). ``int8`` is ``int:bits=8``.
Codes are bit-packed (:mod:`tasks.compression.quant`), each row starting on a byte, so
the stored bytes are what the ratio counts. Parameters are float32 equivalents
(bytes / 4).
"""

from __future__ import annotations

from typing import Any

import torch

from tasks.compression.base import CompressionResult, Progress, relative_row_errors, tensor_bytes
from tasks.compression.quant import code_positions, pack, quantize_groups
from tasks.compression.spec import VariantSpec
from tasks.errors import ArtifactError, CompressionError


def group_size(spec_group: int | None, dim: int) -> int:
    """The group size in values; refuses one that does not divide ``dim``."""
    if spec_group is None:
        return dim
    if dim % spec_group:
        divisors = [g for g in range(2, dim + 1) if dim % g == 0]
        raise CompressionError(
            f"group={spec_group} does not divide the hidden size {dim}",
            hint=f"group= takes a divisor of {dim}: {', '.join(map(str, divisors))}",
        )
    return spec_group


def quantize_table(table: torch.Tensor, bits: int, group: int) -> dict[str, torch.Tensor]:
    """Packed codes, float16 scales and minima of every group of every row."""
    rows, dim = (int(s) for s in table.shape)
    codes, scale, minimum = quantize_groups(table.reshape(rows, dim // group, group), bits)
    packed = pack(codes, bits, code_positions(torch.arange(rows), dim, bits))
    return {"codes": packed, "scale": scale.contiguous(), "minimum": minimum.contiguous()}


def compress(
    table: torch.Tensor, spec: VariantSpec, *, progress: Progress | None = None
) -> CompressionResult:
    """Quantise ``table`` to ``bits=`` bits, per row or per ``group=``."""
    from tasks.compression.qembedding import IntEmbedding

    bits = spec.get("bits")
    rows, dim = (int(s) for s in table.shape)
    group = group_size(spec.get("group"), dim)
    tensors = quantize_table(table, bits, group)
    payload = tensor_bytes(tensors)
    approx = IntEmbedding(
        tensors["codes"], tensors["scale"], tensors["minimum"], bits, group
    ).materialize()
    return CompressionResult(
        tensors=tensors,
        method={
            "name": "int",
            "bits": bits,
            "group": group,
            "bits_per_weight": payload * 8 / (rows * dim),
        },
        params=payload // 4,
        payload_bytes=payload,
        row_errors=relative_row_errors(table, approx),
    )


def build_embedding(
    tensors: dict[str, torch.Tensor], method: dict[str, Any], *, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The :class:`~tasks.compression.qembedding.IntEmbedding` of an artifact."""
    from tasks.compression.embedding import Int8Embedding
    from tasks.compression.qembedding import IntEmbedding

    bits, group = int(method["bits"]), int(method["group"])
    scale, minimum = tensors["scale"], tensors["minimum"]
    if bits == 8 and scale.ndim == 2 and scale.shape[1] == 1:
        # 8-bit rows with one scale each are whole bytes: held in the layout of
        # torch's int8 weight-only kernel, so that the table can also be a tied head
        rows, dim = int(scale.shape[0]), group
        codes = tensors["codes"]
        if int(codes.numel()) < rows * dim:
            raise ArtifactError(
                f"int codes: {codes.numel()} bytes, {rows} rows of {dim} 8-bit codes "
                f"need {rows * dim}"
            )
        return Int8Embedding(
            codes[: rows * dim].reshape(rows, dim),
            scale[:, 0].to(torch.float32),
            minimum[:, 0].to(torch.float32),
            dtype=dtype,
        )
    return IntEmbedding(
        tensors["codes"],
        tensors["scale"],
        tensors["minimum"],
        int(method["bits"]),
        int(method["group"]),
        dtype=dtype,
    )
