"""``codebook``: K-bit codes into a non-uniform set of levels, per group of G values.

Uniform (affine) levels waste codes where a group's values are rare: embedding values are
bell-shaped, dense near zero. Two codebooks place the levels where the values are:

* ``book=nf`` (NormalFloat, NF4 at 4 bits): the same 2^K levels for every group, at the
  quantiles of a standard normal (0 exact, one more level on the positive side), scaled
  per group by its largest magnitude; one float16 scale per group.
* ``book=kmeans``: 2^K levels per group fitted to its own values by 1-D k-means (Lloyd's
  iterations from the group's quantiles), stored as float16; the codebook costs
  ``2^K x 16`` bits per group, so groups are large.

``group=`` defaults to a whole row, as for ``int``; ``nf4`` is ``codebook:book=nf:bits=4:group=64``
(QLoRA's blocks).

Codes are bit-packed like ``int``'s (each row starting on a byte) and always point at the
nearest stored (float16) level, so what a device rebuilds is what the error counts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tasks.compression.base import CompressionResult, Progress, relative_row_errors, tensor_bytes
from tasks.compression.quant import code_positions, pack, row_stride_bits, unpack_at
from tasks.compression.scalar import group_size
from tasks.compression.spec import VariantSpec
from tasks.errors import ArtifactError

#: QLoRA's offset: the outermost normal quantile used for +-1 (midway between the
#: quantiles that 15 and 16 equal-probability bins would put there)
NF_OFFSET = 0.5 * (1 - 1 / 30 + 1 - 1 / 32)
#: Lloyd iterations of the k-means codebooks
KMEANS_ITERATIONS = 12
#: rows quantised at a time (bounds the temporary tensors)
CHUNK_ROWS = 8192


def nf_levels(bits: int) -> torch.Tensor:
    """The 2^K NormalFloat levels in [-1, 1], ascending: 2^(K-1) positive, 0, and
    2^(K-1) - 1 negative, at standard normal quantiles (NF4 at ``bits=4``)."""
    half = 1 << (bits - 1)
    positive = torch.special.ndtri(torch.linspace(NF_OFFSET, 0.5, half + 1, dtype=torch.float64))
    negative = -torch.special.ndtri(torch.linspace(NF_OFFSET, 0.5, half, dtype=torch.float64))
    levels = torch.cat([positive[:-1], torch.zeros(1, dtype=torch.float64), negative[:-1]])
    levels = levels / levels.abs().max()
    return levels.sort().values.to(torch.float32)


def nearest(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """int64 index of the nearest of ascending ``levels`` (last axis) for every value;
    ``levels`` is 1-D or has ``values``' leading shape."""
    mids = (levels[..., 1:] + levels[..., :-1]) / 2
    if mids.ndim == 1:
        return torch.bucketize(values, mids)
    return torch.searchsorted(mids.contiguous(), values.contiguous())


def _nf_groups(x: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and float16 scales (largest magnitude) of groups ``x`` (n, G)."""
    scale = x.abs().amax(-1).to(torch.float16)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale)).to(torch.float32)
    return nearest(x / safe[:, None], levels), scale


def _kmeans_groups(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and float16 ascending codebooks (n, k) of groups ``x`` (n, G)."""
    probs = (torch.arange(k, dtype=torch.float32) + 0.5) / k
    books = torch.quantile(x, probs, dim=-1).T.contiguous()
    for _ in range(KMEANS_ITERATIONS):
        codes = nearest(x, books)
        sums = torch.zeros_like(books).scatter_add_(1, codes, x)
        counts = torch.zeros_like(books).scatter_add_(1, codes, torch.ones_like(x))
        # a level that lost all its values moves to the value worst served now
        error = (x - books.gather(1, codes)).abs()
        worst = x.gather(1, error.argmax(1, keepdim=True))
        books = torch.where(counts > 0, sums / counts.clamp_min(1), worst).sort(-1).values
    stored = books.to(torch.float16)
    return nearest(x, stored.to(torch.float32)), stored


def compress(
    table: torch.Tensor, spec: VariantSpec, *, progress: Progress | None = None
) -> CompressionResult:
    """Codes of every group of ``group=`` values into the ``book=`` codebook."""
    book, bits = spec.get("book"), spec.get("bits")
    rows, dim = (int(s) for s in table.shape)
    group = group_size(spec.get("group"), dim)
    levels = nf_levels(bits)
    codes, side = [], []
    for start in range(0, rows, CHUNK_ROWS):
        chunk = table[start : start + CHUNK_ROWS].to(torch.float32).reshape(-1, group)
        if book == "nf":
            c, s = _nf_groups(chunk, levels)
        else:
            c, s = _kmeans_groups(chunk, 1 << bits)
        codes.append(c.reshape(-1, dim))
        side.append(s.reshape(-1, dim // group, *s.shape[1:]))
        if progress is not None:
            progress(f"codebook {book}", min(start + CHUNK_ROWS, rows), rows)
    packed = pack(torch.cat(codes), bits, code_positions(torch.arange(rows), dim, bits))
    tensors = {"codes": packed}
    if book == "nf":
        tensors |= {"scale": torch.cat(side).contiguous(), "levels": levels}
    else:
        tensors["book"] = torch.cat(side).contiguous()
    payload = tensor_bytes(tensors)
    module = CodebookEmbedding(tensors, bits, group)
    return CompressionResult(
        tensors=tensors,
        method={
            "name": "codebook",
            "book": book,
            "bits": bits,
            "group": group,
            "bits_per_weight": payload * 8 / (rows * dim),
        },
        params=payload // 4,
        payload_bytes=payload,
        row_errors=relative_row_errors(table, module.materialize()),
    )


class CodebookEmbedding(nn.Module):
    """Rows decoded from K-bit codes: ``levels[code] * scale[v, g]`` (nf) or
    ``book[v, g, code]`` (kmeans), for value ``j`` of token ``v`` in group ``g = j // G``."""

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        bits: int,
        group: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        codes = tensors.get("codes")
        side = tensors.get("book", tensors.get("scale"))
        if codes is None or side is None or side.ndim not in (2, 3):
            raise ArtifactError("codebook tensors: codes and a book or scale are needed")
        rows, dim = int(side.shape[0]), int(side.shape[1]) * group
        need = rows * row_stride_bits(dim, bits) // 8 + 1
        if codes.ndim != 1 or int(codes.numel()) < need:
            raise ArtifactError(
                f"codebook codes: {codes.numel()} bytes, {rows} rows of {dim} {bits}-bit "
                f"codes need {need}"
            )
        self.per_group_book = "book" in tensors
        if self.per_group_book and side.shape[2] != 1 << bits:
            raise ArtifactError(
                f"codebook book: {side.shape[2]} levels, {bits} bits need {1 << bits}"
            )
        if not self.per_group_book:
            levels = tensors.get("levels")
            if levels is None or levels.shape != (1 << bits,):
                raise ArtifactError(f"codebook levels: {1 << bits} NormalFloat levels are needed")
            self.register_buffer("levels", levels.to(torch.float32).contiguous())
        self.register_buffer("codes", codes.to(torch.uint8).contiguous())
        self.register_buffer("side", side.to(torch.float16).contiguous())
        self.bits, self.group = bits, group
        self.num_embeddings, self.embedding_dim = rows, dim
        self.out_dtype = dtype

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        flat = input_ids.reshape(-1)
        groups = self.embedding_dim // self.group
        codes = unpack_at(
            self.codes, code_positions(flat, self.embedding_dim, self.bits), self.bits
        ).reshape(-1, groups, self.group)
        side = self.side[flat].to(torch.float32)
        if self.per_group_book:
            out = torch.gather(side, 2, codes)
        else:
            out = self.levels[codes] * side[:, :, None]
        return out.reshape(*input_ids.shape, self.embedding_dim).to(self.out_dtype)

    def materialize(self) -> torch.Tensor:
        from tasks.compression.qembedding import _materialize

        return _materialize(self)

    def extra_repr(self) -> str:
        book = "kmeans" if self.per_group_book else "nf"
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, book={book}, bits={self.bits}, "
            f"group={self.group}"
        )


def build_embedding(
    tensors: dict[str, torch.Tensor], method: dict[str, Any], *, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The :class:`CodebookEmbedding` of an artifact."""
    try:
        return CodebookEmbedding(tensors, int(method["bits"]), int(method["group"]), dtype=dtype)
    except KeyError as exc:
        raise ArtifactError(f"manifest method: {exc} is missing") from exc
