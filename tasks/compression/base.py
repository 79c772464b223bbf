"""What every compression method module provides.

A method module (one per entry of :data:`tasks.compression.spec.METHODS`) defines

* ``compress(table, spec, *, progress=None) -> CompressionResult`` (controller side), and
* ``build_embedding(tensors, method, *, dtype) -> torch.nn.Module`` (device side): the
  on-the-fly embedding module from the tensors of ``cores.safetensors`` and the
  ``method`` section of the manifest. The module has ``materialize() -> Tensor``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from tasks.compression.spec import VariantSpec

#: progress(description, completed, total)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CompressionResult:
    """A compressed embedding table, ready to be written as an artifact."""

    #: tensors of cores.safetensors
    tensors: dict[str, torch.Tensor]
    #: the manifest's ``method`` section: name plus every resolved parameter
    method: dict[str, Any]
    #: stored parameters in float32 equivalents (bytes / 4 for non-float32 storage)
    params: int
    #: bytes of the stored tensors (payload only)
    payload_bytes: int
    #: (V,) float64 relative reconstruction error ||x - x_hat|| / ||x|| of every row
    row_errors: torch.Tensor


class MethodModule(Protocol):
    """The interface of a method module (see the module docstring)."""

    def compress(
        self, table: torch.Tensor, spec: VariantSpec, *, progress: Progress | None = None
    ) -> CompressionResult: ...

    def build_embedding(
        self, tensors: dict[str, torch.Tensor], method: dict[str, Any], *, dtype: torch.dtype
    ) -> torch.nn.Module: ...


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of the raw data of ``tensors``."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def relative_row_errors(table: torch.Tensor, approx: torch.Tensor) -> torch.Tensor:
    """||x - x_hat|| / ||x|| per row in float64 (0 for an all-zero row)."""
    x = table.to(torch.float64)
    norms = x.norm(dim=1)
    return (x - approx.to(torch.float64)).norm(dim=1) / torch.where(norms > 0, norms, 1.0)
