"""Quantised TT cores (``tt:...:cores=int8|int6|int4``).

Every core of every token gets its own affine quantisation: K-bit codes with a float16
scale and minimum (:mod:`tasks.compression.quant`). Core ``k`` of all tokens is one
packed stream in the token-major order of :class:`~tasks.compression.cores.TTCores`, so
a token's codes are found from the same offsets as its float cores.

Stored tensors: ``ranks`` (V, N+1) int32, ``codes{k}`` uint8 streams, ``scale`` and
``minimum`` (V, N) float16.
"""

from __future__ import annotations

import torch

from tasks.compression.cores import TTCores
from tasks.compression.quant import affine_params, codes_of, pack

#: ``cores=`` value -> bits per code (fp32: not quantised)
CORE_BITS = {"fp32": None, "int8": 8, "int6": 6, "int4": 4}


def quantize_cores(cores: TTCores, bits: int) -> dict[str, torch.Tensor]:
    """The stored tensors of ``cores`` quantised to ``bits`` bits per value."""
    sizes = cores.core_sizes()
    rows = cores.num_rows
    scales, minima, tensors = [], [], {}
    for k, flat in enumerate(cores.cores):
        owner = torch.repeat_interleave(torch.arange(rows), sizes[:, k])
        x = flat.to(torch.float64)
        low = torch.full((rows,), torch.inf, dtype=torch.float64).scatter_reduce(
            0, owner, x, "amin"
        )
        high = torch.full((rows,), -torch.inf, dtype=torch.float64).scatter_reduce(
            0, owner, x, "amax"
        )
        scale, minimum = affine_params(low, high, bits)
        tensors[f"codes{k}"] = pack(codes_of(x, scale[owner], minimum[owner], bits), bits)
        scales.append(scale)
        minima.append(minimum)
    tensors["ranks"] = cores.ranks.to(torch.int32).contiguous()
    tensors["scale"] = torch.stack(scales, 1).contiguous()
    tensors["minimum"] = torch.stack(minima, 1).contiguous()
    return tensors


def stored_bytes(tensors: dict[str, torch.Tensor], order: int) -> int:
    """Bytes of the codes, scales and minima (the rank table is layout, as for fp32 cores)."""
    names = [f"codes{k}" for k in range(order)] + ["scale", "minimum"]
    return sum(tensors[n].numel() * tensors[n].element_size() for n in names)


def embedding_from_tensors(
    tensors: dict[str, torch.Tensor], shape: tuple[int, ...], bits: int, dtype: torch.dtype
) -> torch.nn.Module:
    """The :class:`~tasks.compression.qembedding.QuantTTEmbedding` of stored tensors."""
    from tasks.compression.qembedding import QuantTTEmbedding

    codes = tuple(tensors[f"codes{k}"] for k in range(len(shape)))
    ranks, scale, minimum = tensors["ranks"], tensors["scale"], tensors["minimum"]
    return QuantTTEmbedding(shape, ranks, codes, scale, minimum, bits, dtype=dtype)
