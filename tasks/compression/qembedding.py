"""Embedding modules over integer codes: scalar K-bit rows, quantised TT cores, GGUF blocks.

Like :mod:`tasks.compression.embedding`, each module keeps only its stored data resident
and decodes the rows a batch asks for (``materialize()`` decodes them all). Device side:
torch only.
"""

from __future__ import annotations

import torch
from torch import nn

from tasks.compression.cores import TTCores, contract
from tasks.compression.quant import code_positions, dequantize_codes, row_stride_bits, unpack_at
from tasks.errors import ArtifactError

#: rows decoded at a time by ``materialize()``, to bound the temporary index tensors
_MATERIALIZE_ROWS = 4096


def _materialize(module: nn.Module) -> torch.Tensor:
    ids = torch.arange(module.num_embeddings)
    with torch.no_grad():
        parts = [
            module(ids[s : s + _MATERIALIZE_ROWS]) for s in range(0, ids.numel(), _MATERIALIZE_ROWS)
        ]
    return torch.cat(parts)


class IntEmbedding(nn.Module):
    """K-bit affine rows: ``E[v, j] = code * scale[v, j // G] + minimum[v, j // G]``."""

    def __init__(
        self,
        codes: torch.Tensor,
        scale: torch.Tensor,
        minimum: torch.Tensor,
        bits: int,
        group: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if scale.ndim != 2 or scale.shape != minimum.shape or codes.ndim != 1:
            raise ArtifactError(
                f"int codes {tuple(codes.shape)}, scale {tuple(scale.shape)} and minimum "
                f"{tuple(minimum.shape)} do not fit together"
            )
        rows, dim = int(scale.shape[0]), int(scale.shape[1]) * group
        need = rows * row_stride_bits(dim, bits) // 8
        if int(codes.numel()) < need + 1:
            raise ArtifactError(
                f"int codes: {codes.numel()} bytes, {rows} rows of {dim} {bits}-bit codes "
                f"need {need + 1}"
            )
        self.register_buffer("codes", codes.to(torch.uint8).contiguous())
        self.register_buffer("scale", scale.to(torch.float16).contiguous())
        self.register_buffer("minimum", minimum.to(torch.float16).contiguous())
        self.bits, self.group = bits, group
        self.num_embeddings, self.embedding_dim = rows, dim
        self.out_dtype = dtype

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        flat = input_ids.reshape(-1)
        codes = unpack_at(
            self.codes, code_positions(flat, self.embedding_dim, self.bits), self.bits
        )
        groups = self.embedding_dim // self.group
        out = dequantize_codes(
            codes.reshape(-1, groups, self.group),
            self.scale[flat][:, :, None],
            self.minimum[flat][:, :, None],
        )
        return out.reshape(*input_ids.shape, self.embedding_dim).to(self.out_dtype)

    def materialize(self) -> torch.Tensor:
        return _materialize(self)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, group={self.group}"


class QuantTTEmbedding(nn.Module):
    """Per-token tensor trains whose cores are K-bit codes, one scale and minimum per core.

    Value ``j`` of token ``v``'s core ``k`` is code ``offsets[v, k] + j`` of the packed
    stream of core ``k``, decoded as ``code * scale[v, k] + minimum[v, k]``. Tokens are
    grouped by rank pattern as in :class:`~tasks.compression.embedding.TTEmbedding`.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        ranks: torch.Tensor,
        codes: tuple[torch.Tensor, ...],
        scale: torch.Tensor,
        minimum: torch.Tensor,
        bits: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        layout = TTCores(tuple(shape), ranks.to(torch.int64), tuple(torch.empty(0) for _ in shape))
        n = len(shape)
        if len(codes) != n or scale.shape != (layout.num_rows, n) or minimum.shape != scale.shape:
            raise ArtifactError(
                f"quantised TT cores: {len(codes)} code streams and scales "
                f"{tuple(scale.shape)} do not fit {layout.num_rows} tokens of order {n}"
            )
        sizes = layout.core_sizes().sum(0)
        for k, stream in enumerate(codes):
            if int(stream.numel()) * 8 < int(sizes[k]) * bits:
                raise ArtifactError(
                    f"quantised TT core {k}: {stream.numel()} bytes hold fewer than the "
                    f"{int(sizes[k])} codes the ranks need"
                )
        self.shape, self.bits = tuple(shape), bits
        self.num_embeddings, self.embedding_dim = layout.num_rows, layout.dim
        self.out_dtype = dtype
        self.stored_params = (sum(int(c.numel()) for c in codes) + 4 * int(scale.numel())) // 4
        self.register_buffer("ranks", layout.ranks.to(torch.int32))
        self.register_buffer("offsets", layout.offsets()[:-1].contiguous())
        self.register_buffer("scale", scale.to(torch.float16).contiguous())
        self.register_buffer("minimum", minimum.to(torch.float16).contiguous())
        for k, stream in enumerate(codes):
            self.register_buffer(f"codes{k}", stream.to(torch.uint8).contiguous())

    def _core(self, k: int, ids: torch.Tensor, pattern: tuple[int, ...]) -> torch.Tensor:
        size = pattern[k] * self.shape[k] * pattern[k + 1]
        index = self.offsets[ids, k][:, None] + torch.arange(size)
        codes = unpack_at(getattr(self, f"codes{k}"), index * self.bits, self.bits)
        values = dequantize_codes(codes, self.scale[ids, k][:, None], self.minimum[ids, k][:, None])
        return values.reshape(-1, pattern[k], self.shape[k], pattern[k + 1])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        flat = input_ids.reshape(-1)
        ranks = self.ranks[flat]
        patterns, inverse = torch.unique(ranks, dim=0, return_inverse=True)
        out = torch.empty(flat.numel(), self.embedding_dim, dtype=torch.float32)
        for g, pattern in enumerate(patterns.tolist()):
            sel = torch.nonzero(inverse == g).flatten()
            ids = flat[sel]
            cores = tuple(self._core(k, ids, tuple(pattern)) for k in range(len(self.shape)))
            out[sel] = contract(cores)
        return out.reshape(*input_ids.shape, self.embedding_dim).to(self.out_dtype)

    def materialize(self) -> torch.Tensor:
        return _materialize(self)

    def extra_repr(self) -> str:
        shape = "x".join(map(str, self.shape))
        return f"{self.num_embeddings}, {self.embedding_dim}, shape={shape}, bits={self.bits}"
