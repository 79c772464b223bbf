"""``gguf``: llama.cpp block formats as baselines (``gguf:type=q8_0|q4_0|q4_1``).

The controller quantises with the ``gguf`` package (the reference implementation of the
formats in Python), so a row's bytes are exactly what llama.cpp would store; the device
decodes the blocks with torch alone (:class:`GGUFEmbedding`). Blocks of 32 values:

* Q8_0: float16 ``d`` + 32 int8, ``x = d q`` (8.5 bits per value);
* Q4_0: float16 ``d`` + 16 bytes of nibbles, ``x = d (q - 8)`` (4.5 bits);
* Q4_1: float16 ``d`` and ``m`` + 16 bytes of nibbles, ``x = d q + m`` (5 bits).

In a block of 4-bit codes, the low nibbles hold values 0-15 and the high nibbles 16-31.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tasks.compression.base import CompressionResult, Progress, relative_row_errors, tensor_bytes
from tasks.compression.spec import VariantSpec
from tasks.errors import ArtifactError, CompressionError

BLOCK = 32
#: format -> bytes per block of 32 values
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20}


def _decode_blocks(blocks: torch.Tensor, kind: str) -> torch.Tensor:
    """(n, bytes) uint8 blocks -> (n, 32) float32 values."""
    d = blocks[:, :2].contiguous().view(torch.float16).to(torch.float32)
    if kind == "q8_0":
        return d * blocks[:, 2:].contiguous().view(torch.int8).to(torch.float32)
    nibbles = blocks[:, -16:].to(torch.int64)
    q = torch.cat([nibbles & 0x0F, nibbles >> 4], dim=1).to(torch.float32)
    if kind == "q4_0":
        return d * (q - 8)
    m = blocks[:, 2:4].contiguous().view(torch.float16).to(torch.float32)
    return d * q + m


class GGUFEmbedding(nn.Module):
    """Rows stored as GGUF blocks, decoded for the rows a batch asks for."""

    def __init__(self, blocks: torch.Tensor, kind: str, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if kind not in BLOCK_BYTES:
            raise ArtifactError(
                f"GGUF block format {kind!r} is not one of {', '.join(BLOCK_BYTES)}"
            )
        if blocks.ndim != 2 or blocks.shape[1] % BLOCK_BYTES[kind]:
            raise ArtifactError(
                f"GGUF rows {tuple(blocks.shape)} are not whole {kind} blocks "
                f"of {BLOCK_BYTES[kind]} bytes"
            )
        self.kind = kind
        self.register_buffer("blocks", blocks.to(torch.uint8).contiguous())
        self.num_embeddings = int(blocks.shape[0])
        self.embedding_dim = int(blocks.shape[1]) // BLOCK_BYTES[kind] * BLOCK
        self.out_dtype = dtype

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = self.blocks[input_ids.reshape(-1)].reshape(-1, BLOCK_BYTES[self.kind])
        out = _decode_blocks(rows, self.kind).reshape(*input_ids.shape, self.embedding_dim)
        return out.to(self.out_dtype)

    @torch.no_grad()
    def materialize(self) -> torch.Tensor:
        return self.forward(torch.arange(self.num_embeddings))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, type={self.kind}"


def compress(
    table: torch.Tensor, spec: VariantSpec, *, progress: Progress | None = None
) -> CompressionResult:
    """Quantise every row to the ``type=`` block format with the gguf package."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    kind = spec.get("type")
    rows, dim = (int(s) for s in table.shape)
    if dim % BLOCK:
        raise CompressionError(
            f"gguf:type={kind} stores blocks of {BLOCK} values; the hidden size {dim} is not "
            "a multiple of 32",
            hint="use int:bits=K for this model",
        )
    qtype = GGMLQuantizationType[kind.upper()]
    data = quantize(table.detach().to(torch.float32).numpy(), qtype)
    blocks = torch.from_numpy(np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1).copy())
    tensors = {"blocks": blocks}
    payload = tensor_bytes(tensors)
    approx = GGUFEmbedding(blocks, kind).materialize()
    return CompressionResult(
        tensors=tensors,
        method={"name": "gguf", "type": kind, "bits_per_weight": payload * 8 / (rows * dim)},
        params=payload // 4,
        payload_bytes=payload,
        row_errors=relative_row_errors(table, approx),
    )


def build_embedding(
    tensors: dict[str, torch.Tensor], method: dict[str, Any], *, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The :class:`GGUFEmbedding` of an artifact."""
    return GGUFEmbedding(tensors["blocks"], str(method["type"]), dtype=dtype)
