"""``int8``: per-row affine 8-bit quantisation, the quantisation baseline.

Each row keeps 8-bit codes plus a float32 scale and offset:
``x ~ code * scale + offset`` with ``scale = (max - min) / 255``, ``offset = min``.
Its parameter count is given in float32 equivalents (bytes / 4).
"""

from __future__ import annotations

from typing import Any

import torch

from tasks.compression.base import CompressionResult, Progress, relative_row_errors, tensor_bytes
from tasks.compression.spec import VariantSpec
from tasks.errors import ArtifactError

LEVELS = 255


def quantize(table: torch.Tensor) -> dict[str, torch.Tensor]:
    """Codes (uint8), scale and offset (float32) of every row."""
    x = table.to(torch.float64)
    low, high = x.min(dim=1).values, x.max(dim=1).values
    scale = (high - low) / LEVELS
    safe = torch.where(scale > 0, scale, 1.0)
    codes = ((x - low[:, None]) / safe[:, None]).round().clamp(0, LEVELS).to(torch.uint8)
    return {"codes": codes, "scale": scale.to(torch.float32), "offset": low.to(torch.float32)}


def dequantize(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The float32 table the codes stand for."""
    codes = tensors["codes"].to(torch.float32)
    return codes * tensors["scale"][:, None] + tensors["offset"][:, None]


def compress(
    table: torch.Tensor, spec: VariantSpec, *, progress: Progress | None = None
) -> CompressionResult:
    """Quantise every row of ``table`` to 8 bits."""
    tensors = quantize(table)
    payload = tensor_bytes(tensors)
    return CompressionResult(
        tensors=tensors,
        method={"name": "int8", "bits": 8},
        params=payload // 4,
        payload_bytes=payload,
        row_errors=relative_row_errors(table, dequantize(tensors)),
    )


def build_embedding(
    tensors: dict[str, torch.Tensor], method: dict[str, Any], *, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The :class:`~tasks.compression.embedding.Int8Embedding` of an artifact."""
    from tasks.compression.embedding import Int8Embedding

    try:
        return Int8Embedding(tensors["codes"], tensors["scale"], tensors["offset"], dtype=dtype)
    except KeyError as exc:
        raise ArtifactError(f"cores.safetensors: tensor {exc} is missing") from exc
