"""Compressed input-embedding modules that replace ``model.get_input_embeddings()``.

Each module holds only its compressed data and produces the embeddings of a batch of
token ids on the fly; ``materialize()`` rebuilds the dense table. Two modes:

* ``on-the-fly``: only the compressed data is resident, embedding memory drops by the
  compression ratio, every forward pays the reconstruction of the requested rows;
* ``materialized``: the dense table is rebuilt once at load into a plain ``nn.Embedding``;
  no runtime cost, the saving is in storage and transfer only.

Device side: torch only.
"""

from __future__ import annotations

import torch
from torch import nn

from tasks.compression.cores import TTCores, contract
from tasks.errors import ArtifactError, ConfigError

MODES = ("on-the-fly", "materialized")


class TTEmbedding(nn.Module):
    """Per-token tensor-train embedding: gathers each token's cores and contracts them.

    Tokens are grouped by rank pattern at construction; a forward pass runs one batched
    contraction per pattern present in the batch (one in total for a uniform rank cap).
    """

    def __init__(self, cores: TTCores, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.shape = cores.shape
        self.num_embeddings = cores.num_rows
        self.embedding_dim = cores.dim
        self.out_dtype = dtype
        self.stored_params = cores.num_params
        groups = cores.groups()
        group_of = torch.empty(cores.num_rows, dtype=torch.int64)
        position = torch.empty(cores.num_rows, dtype=torch.int64)
        self.rank_patterns: list[tuple[int, ...]] = []
        for g, group in enumerate(groups):
            group_of[group.rows] = g
            position[group.rows] = torch.arange(len(group.rows))
            self.rank_patterns.append(group.ranks)
            for k, core in enumerate(group.cores):
                self.register_buffer(f"g{g}_core{k}", core.to(torch.float32).contiguous())
        self.register_buffer("group_of", group_of)
        self.register_buffer("position", position)

    def _cores(self, group: int, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f"g{group}_core{k}")[rows] for k in range(len(self.shape)))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        flat = input_ids.reshape(-1)
        if len(self.rank_patterns) == 1:
            out = contract(self._cores(0, self.position[flat]))
        else:
            groups = self.group_of[flat]
            out = torch.empty(
                flat.numel(), self.embedding_dim, dtype=self.g0_core0.dtype, device=flat.device
            )
            for g in torch.unique(groups).tolist():
                sel = torch.nonzero(groups == g).flatten()
                out[sel] = contract(self._cores(g, self.position[flat[sel]]))
        return out.reshape(*input_ids.shape, self.embedding_dim).to(self.out_dtype)

    @torch.no_grad()
    def materialize(self) -> torch.Tensor:
        """The dense ``V x d`` table, built with the same contraction as :meth:`forward`."""
        out = torch.empty(self.num_embeddings, self.embedding_dim, dtype=self.g0_core0.dtype)
        for g in range(len(self.rank_patterns)):
            rows = torch.nonzero(self.group_of == g).flatten()
            out[rows] = contract(self._cores(g, self.position[rows]))
        return out.to(self.out_dtype)

    def extra_repr(self) -> str:
        shape = "x".join(map(str, self.shape))
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, shape={shape}, "
            f"rank_patterns={len(self.rank_patterns)}, params={self.stored_params}"
        )


class HybridTTEmbedding(nn.Module):
    """Tensor trains for most tokens, exact rows for the kept ones, plus a shared mean.

    ``E[v] = dense_rows[slot[v]]`` for a kept token, else ``TT(v) + mean`` (``mean`` zero
    when the artifact is not centered). The tensor trains cover the other tokens in
    ascending id order.
    """

    def __init__(
        self,
        tt: TTEmbedding,
        num_embeddings: int,
        dense_ids: torch.Tensor,
        dense_rows: torch.Tensor,
        mean: torch.Tensor | None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        dim = tt.embedding_dim
        dense_ids = dense_ids.to(torch.int64)
        if dense_rows.shape != (dense_ids.numel(), dim) or (
            mean is not None and mean.shape != (dim,)
        ):
            raise ArtifactError(
                f"dense rows {tuple(dense_rows.shape)} / mean "
                f"{None if mean is None else tuple(mean.shape)} do not fit "
                f"{dense_ids.numel()} kept tokens of width {dim}"
            )
        slot = torch.full((num_embeddings,), -1, dtype=torch.int64)
        if dense_ids.numel():
            if (
                int(dense_ids.min()) < 0
                or int(dense_ids.max()) >= num_embeddings
                or int(torch.unique(dense_ids).numel()) != dense_ids.numel()
            ):
                raise ArtifactError("kept token ids are out of range or repeated")
            slot[dense_ids] = torch.arange(dense_ids.numel())
        tt_rows = torch.nonzero(slot < 0).flatten()
        if tt_rows.numel() != tt.num_embeddings:
            raise ArtifactError(
                f"{tt.num_embeddings} tensor trains for {tt_rows.numel()} "
                "tokens that are not kept dense"
            )
        tt_index = torch.full((num_embeddings,), -1, dtype=torch.int64)
        tt_index[tt_rows] = torch.arange(tt_rows.numel())
        tt.out_dtype = torch.float32
        self.tt = tt
        self.num_embeddings, self.embedding_dim = num_embeddings, dim
        self.out_dtype = dtype
        self.stored_params = tt.stored_params + dense_rows.numel() + (0 if mean is None else dim)
        self.register_buffer("slot", slot)
        self.register_buffer("tt_index", tt_index)
        self.register_buffer("dense_rows", dense_rows.to(torch.float32).contiguous())
        self.register_buffer("mean", None if mean is None else mean.to(torch.float32))

    @classmethod
    def from_tensors(
        cls, cores: TTCores, tensors: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
    ) -> HybridTTEmbedding:
        """From the tensors of an artifact: cores plus ``dense_ids``/``dense_rows``/``mean``."""
        dim = cores.dim
        ids = tensors.get("dense_ids", torch.zeros(0, dtype=torch.int64))
        rows = tensors.get("dense_rows", torch.zeros(0, dim))
        return cls(
            TTEmbedding(cores),
            cores.num_rows + int(ids.numel()),
            ids,
            rows,
            tensors.get("mean"),
            dtype=dtype,
        )

    def _rows(self, flat: torch.Tensor) -> torch.Tensor:
        slot = self.slot[flat]
        kept = slot >= 0
        out = torch.empty(flat.numel(), self.embedding_dim, dtype=torch.float32, device=flat.device)
        if bool(kept.any()):
            out[kept] = self.dense_rows[slot[kept]]
        rest = ~kept
        if bool(rest.any()):
            approx = self.tt(self.tt_index[flat[rest]])
            out[rest] = approx if self.mean is None else approx + self.mean
        return out

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self._rows(input_ids.reshape(-1))
        return out.reshape(*input_ids.shape, self.embedding_dim).to(self.out_dtype)

    @torch.no_grad()
    def materialize(self) -> torch.Tensor:
        """The dense ``V x d`` table."""
        return self._rows(torch.arange(self.num_embeddings)).to(self.out_dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, "
            f"kept={self.dense_rows.shape[0]}, centered={self.mean is not None}, "
            f"params={self.stored_params}"
        )


class LowRankEmbedding(nn.Module):
    """Whole-table low-rank factorisation: ``E[ids] = left[ids] @ right``."""

    def __init__(
        self, left: torch.Tensor, right: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        self.register_buffer("left", left.to(torch.float32).contiguous())
        self.register_buffer("right", right.to(torch.float32).contiguous())
        self.num_embeddings, self.embedding_dim = left.shape[0], right.shape[1]
        self.out_dtype = dtype
        self.stored_params = left.numel() + right.numel()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return (self.left[input_ids] @ self.right).to(self.out_dtype)

    @torch.no_grad()
    def materialize(self) -> torch.Tensor:
        return self.forward(torch.arange(self.num_embeddings))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.left.shape[1]}"


class Int8Embedding(nn.Module):
    """Per-row affine 8-bit codes: ``E[v] = codes[v] * scale[v] + offset[v]``.

    Held as signed codes (``codes - 128``, with the offset moved by ``128 * scale``), the
    layout of torch's int8 weight-only kernel, so that the table also serves as a tied
    LM head without a second copy: ``logits_v = scale_v (x . q_v) + offset_v sum(x)``.
    """

    def __init__(
        self,
        codes: torch.Tensor,
        scale: torch.Tensor,
        offset: torch.Tensor,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        from tasks.compression.head import pad_rows

        signed = (codes.to(torch.int16) - 128).to(torch.int8)
        scale = scale.to(torch.float32)
        # zero rows up to the int8 kernel's block; lookups never reach them
        self.register_buffer("codes", pad_rows(signed))
        self.register_buffer("scale", pad_rows(scale))
        self.register_buffer("offset", (offset.to(torch.float32) + 128.0 * scale).contiguous())
        self.num_embeddings, self.embedding_dim = codes.shape
        self.out_dtype = dtype

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Float32 rows ``ids``."""
        codes = self.codes[ids].to(torch.float32)
        return codes * self.scale[ids].unsqueeze(-1) + self.offset[ids].unsqueeze(-1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.rows(input_ids).to(self.out_dtype)

    @torch.no_grad()
    def materialize(self) -> torch.Tensor:
        return self.forward(torch.arange(self.num_embeddings))

    def head_kernels(self) -> list:
        """torch's int8 weight-only product (fp32 or bf16 activations), or chunks
        dequantised to float32."""
        from tasks.compression.head import Candidate, chunked

        codes, scale, offset = self.codes, self.scale, self.offset
        rows = self.num_embeddings

        def packed(dtype: torch.dtype):
            s = scale.to(dtype)

            def logits(x: torch.Tensor) -> torch.Tensor:
                out = torch._weight_int8pack_mm(x.to(dtype).contiguous(), codes, s)
                return out[:, :rows].to(torch.float32) + x.sum(dim=1, keepdim=True) * offset

            return lambda: logits

        def dequant(a: int, b: int) -> torch.Tensor:
            return codes[a:b].to(torch.float32) * scale[a:b, None] + offset[a:b, None]

        return [
            Candidate("int8pack-fp32", packed(torch.float32), "int8 weights, fp32 activations"),
            Candidate("int8pack-bf16", packed(torch.bfloat16), "int8 weights, bf16 activations"),
            Candidate(
                "int8-chunked-fp32",
                lambda: chunked(self.num_embeddings, dequant, torch.float32),
                "rows dequantised to fp32 in chunks",
            ),
        ]


class ChannelScaledEmbedding(nn.Module):
    """Rows of an inner embedding multiplied channel by channel by a stored scale: a table
    decomposed with its channels weighted (``tt:metric=layer0``) is unweighted here."""

    def __init__(self, inner: nn.Module, scale: torch.Tensor) -> None:
        super().__init__()
        if scale.shape != (int(inner.embedding_dim),):
            raise ArtifactError(
                f"channel_scale: {tuple(scale.shape)} does not fit rows of "
                f"{inner.embedding_dim} values"
            )
        self.inner = inner
        self.register_buffer("scale", scale.to(torch.float32).contiguous())
        self.num_embeddings, self.embedding_dim = inner.num_embeddings, inner.embedding_dim
        self.out_dtype = getattr(inner, "out_dtype", torch.float32)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return (self.inner(input_ids).to(torch.float32) * self.scale).to(self.out_dtype)

    @torch.no_grad()
    def materialize(self) -> torch.Tensor:
        return (self.inner.materialize().to(torch.float32) * self.scale).to(self.out_dtype)


def in_mode(module: nn.Module, mode: str) -> nn.Module:
    """The module for ``mode``: itself on the fly, or a dense ``nn.Embedding`` rebuilt once."""
    if mode not in MODES:
        raise ConfigError(f"embedding mode {mode!r} is not one of {'/'.join(MODES)}")
    if mode == "on-the-fly":
        return module
    return nn.Embedding.from_pretrained(module.materialize(), freeze=True)


def resident_bytes(module: nn.Module) -> int:
    """Bytes of the tensors an embedding module keeps in memory (buffers and parameters)."""
    tensors = list(module.buffers()) + list(module.parameters())
    return sum(t.numel() * t.element_size() for t in tensors)
