"""``dense``: the identity variant. The model runs unmodified and there is no artifact."""

from __future__ import annotations

from typing import Any

import torch

from tasks.compression.base import CompressionResult, Progress
from tasks.compression.spec import VariantSpec
from tasks.errors import CompressionError


def compress(
    table: torch.Tensor, spec: VariantSpec, *, progress: Progress | None = None
) -> CompressionResult:
    """Never called for artifacts: ``dense`` needs none (``build_artifact`` returns None)."""
    raise CompressionError(
        "the dense variant has no artifact to build",
        hint="run the unmodified model; only tt, svd, int and gguf build artifacts",
    )


def build_embedding(
    tensors: dict[str, torch.Tensor], method: dict[str, Any], *, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The identity variant has no compressed embedding."""
    raise CompressionError("the dense variant has no compressed embedding")
