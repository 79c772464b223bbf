"""``fp16`` and ``bf16``: the table stored as 16-bit floats (2x against float32).

The simplest scalar formats, and the ones with the fastest head kernels on many CPUs
(native half-precision matrix products). The table is rounded to the format once; rows
are widened to the model's dtype at lookup.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tasks.compression.base import CompressionResult, Progress, relative_row_errors, tensor_bytes
from tasks.compression.head import Candidate, Kernel, chunked
from tasks.compression.spec import VariantSpec
from tasks.errors import ArtifactError, CompressionError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def compress(
    table: torch.Tensor, spec: VariantSpec, *, progress: Progress | None = None
) -> CompressionResult:
    """Round every entry of ``table`` to the method's 16-bit float format."""
    dtype = DTYPES[spec.method]
    if spec.method == "fp16" and float(table.abs().max()) > torch.finfo(torch.float16).max:
        raise CompressionError(
            "the table holds values beyond float16's range", hint="use bf16 for this model"
        )
    tensors = {"table": table.to(dtype).contiguous()}
    payload = tensor_bytes(tensors)
    return CompressionResult(
        tensors=tensors,
        method={"name": spec.method, "bits": 16},
        params=payload // 4,
        payload_bytes=payload,
        row_errors=relative_row_errors(table, tensors["table"]),
    )


class HalfEmbedding(nn.Module):
    """A table held in fp16 or bf16, widened to ``dtype`` at lookup; serves as a head."""

    def __init__(self, table: torch.Tensor, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if table.dtype not in DTYPES.values() or table.dim() != 2:
            raise ArtifactError(f"a 16-bit float table was expected, got {table.dtype}")
        self.register_buffer("table", table.contiguous())
        self.num_embeddings, self.embedding_dim = table.shape
        self.out_dtype = dtype

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.table[input_ids].to(self.out_dtype)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Exact float32 rows ``ids``."""
        return self.table[ids].to(torch.float32)

    @torch.no_grad()
    def materialize(self) -> torch.Tensor:
        return self.table.to(self.out_dtype)

    def head_kernels(self) -> list[Candidate]:
        """Native 16-bit matrix product, or chunks widened to float32."""
        table, dtype = self.table, self.table.dtype
        name = "fp16" if dtype == torch.float16 else "bf16"

        def native() -> Kernel:
            return lambda x: (x.to(dtype) @ table.T).to(torch.float32)

        def widened() -> Kernel:
            return chunked(
                self.num_embeddings, lambda a, b: table[a:b].to(torch.float32), torch.float32
            )

        return [
            Candidate(f"{name}-matmul", native, f"{name} product, {name} activations"),
            Candidate(f"{name}-chunked-fp32", widened, "rows widened to fp32 in chunks"),
        ]


def build_embedding(
    tensors: dict[str, torch.Tensor], method: dict[str, Any], *, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The :class:`HalfEmbedding` of an artifact."""
    return HalfEmbedding(tensors["table"], dtype=dtype)
