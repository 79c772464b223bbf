"""Per-token tensor-train cores with ragged ranks, stored without padding.

Token ``v`` has ranks ``(1, r_1, ..., r_{N-1}, 1)`` and cores ``G_k`` of shape
``(r_{k-1}, I_k, r_k)``. Core ``k`` of all tokens is one flat float32 vector: the row-major
cores of token 0, then token 1, ... Offsets follow from the ranks, so the stored data is
exactly the real parameters plus one small integer rank table.

Tokens with the same rank pattern are contracted together with batched matrix products;
this module needs only torch (it runs on the device).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tasks.errors import ArtifactError


@dataclass(frozen=True)
class RankGroup:
    """Tokens sharing one rank pattern, their cores stacked as ``(n, r_{k-1}, I_k, r_k)``."""

    ranks: tuple[int, ...]
    rows: torch.Tensor
    cores: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class TTCores:
    """Ragged per-token TT cores of a ``V x d`` table, ``d = prod(shape)``."""

    shape: tuple[int, ...]
    #: (V, N+1) integer ranks, first and last column are 1
    ranks: torch.Tensor
    #: N flat float32 tensors, token-major
    cores: tuple[torch.Tensor, ...]

    @property
    def num_rows(self) -> int:
        return int(self.ranks.shape[0])

    @property
    def order(self) -> int:
        return len(self.shape)

    @property
    def dim(self) -> int:
        return int(torch.tensor(self.shape).prod())

    @property
    def num_params(self) -> int:
        """Real parameters: the sum of every token's core sizes (no padding)."""
        return sum(int(c.numel()) for c in self.cores)

    def core_sizes(self) -> torch.Tensor:
        """(V, N) number of entries of each token's core k."""
        r = self.ranks.to(torch.int64)
        dims = torch.tensor(self.shape, dtype=torch.int64)
        return r[:, :-1] * dims * r[:, 1:]

    def offsets(self) -> torch.Tensor:
        """(V+1, N) start of each token's core k in the flat vector of core k."""
        sizes = self.core_sizes()
        zero = torch.zeros(1, sizes.shape[1], dtype=torch.int64)
        return torch.cat([zero, sizes.cumsum(0)])

    def validate(self, where: str = "TT cores") -> None:
        """Raise :class:`ArtifactError` unless ranks, shape and core lengths agree."""
        n = self.order
        if self.ranks.ndim != 2 or self.ranks.shape[1] != n + 1 or len(self.cores) != n:
            raise ArtifactError(
                f"{where}: rank table {tuple(self.ranks.shape)} does not fit "
                f"a tensor shape of order {n} with {len(self.cores)} cores"
            )
        if self.num_rows and (
            bool((self.ranks[:, 0] != 1).any())
            or bool((self.ranks[:, -1] != 1).any())
            or bool((self.ranks < 1).any())
        ):
            raise ArtifactError(f"{where}: boundary ranks must be 1 and all ranks >= 1")
        expected = self.core_sizes().sum(0)
        for k, core in enumerate(self.cores):
            if core.ndim != 1 or int(core.numel()) != int(expected[k]):
                raise ArtifactError(
                    f"{where}: core {k} holds {core.numel()} values, the "
                    f"ranks need {int(expected[k])}"
                )

    def groups(self) -> list[RankGroup]:
        """Tokens grouped by rank pattern, with their cores gathered into dense stacks."""
        patterns, inverse = torch.unique(self.ranks, dim=0, return_inverse=True)
        if patterns.shape[0] == 1:  # uniform ranks: the flat cores are already stacks
            p = patterns[0].tolist()
            stacks = tuple(
                core.reshape(-1, p[k], dim, p[k + 1])
                for k, (core, dim) in enumerate(zip(self.cores, self.shape, strict=True))
            )
            return [RankGroup(tuple(p), torch.arange(self.num_rows), stacks)]
        offsets = self.offsets()
        out = []
        for g, pattern in enumerate(patterns.tolist()):
            rows = torch.nonzero(inverse == g).flatten()
            stacks = []
            for k, dim in enumerate(self.shape):
                size = pattern[k] * dim * pattern[k + 1]
                index = offsets[rows, k][:, None] + torch.arange(size)
                stacks.append(self.cores[k][index].reshape(-1, pattern[k], dim, pattern[k + 1]))
            out.append(RankGroup(tuple(pattern), rows, tuple(stacks)))
        return out

    def reconstruct(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense ``V x d`` table the cores represent."""
        out = torch.empty(self.num_rows, self.dim, dtype=dtype)
        for group in self.groups():
            out[group.rows] = contract(tuple(c.to(dtype) for c in group.cores))
        return out

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Named tensors for a safetensors file."""
        tensors = {"ranks": self.ranks.to(torch.int32).contiguous()}
        for k, core in enumerate(self.cores):
            tensors[f"core{k}"] = core.to(torch.float32).contiguous()
        return tensors

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], shape: tuple[int, ...], where: str = "TT cores"
    ) -> TTCores:
        """Inverse of :meth:`to_tensors`; validates the layout."""
        try:
            cores = tuple(tensors[f"core{k}"] for k in range(len(shape)))
            ranks = tensors["ranks"].to(torch.int64)
        except KeyError as exc:
            raise ArtifactError(f"{where}: tensor {exc} is missing") from exc
        tt = cls(tuple(int(s) for s in shape), ranks, cores)
        tt.validate(where)
        return tt


def contract(cores: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Contract stacked cores ``(n, r_{k-1}, I_k, r_k)`` into ``(n, prod I_k)`` rows.

    Row-major order of the tensor indices, as ``x.reshape(shape)`` and tensorly's
    ``tt_to_tensor`` use.
    """
    n = cores[0].shape[0]
    acc = cores[0].reshape(n, -1, cores[0].shape[-1])
    for core in cores[1:]:
        r_prev, dim, r_next = core.shape[1:]
        acc = torch.bmm(acc, core.reshape(n, r_prev, dim * r_next)).reshape(n, -1, r_next)
    return acc.reshape(n, -1)


def flatten_padded(padded: list[torch.Tensor], ranks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop the zero padding of cores stacked at the largest rank of a batch.

    ``padded[k]`` is ``(B, R_{k-1}, I_k, R_k)``; token ``b`` uses the leading
    ``ranks[b, k] x I_k x ranks[b, k+1]`` block. Returns the token-major flat cores.
    """
    flat = []
    for k, core in enumerate(padded):
        if bool((ranks[:, k] == core.shape[1]).all()) and bool(
            (ranks[:, k + 1] == core.shape[3]).all()
        ):
            flat.append(core.reshape(-1))  # no padding in this core
            continue
        rp = torch.arange(core.shape[1])[None, :] < ranks[:, k : k + 1]
        rn = torch.arange(core.shape[3])[None, :] < ranks[:, k + 1 : k + 2]
        mask = rp[:, :, None, None] & rn[:, None, None, :]
        flat.append(core[mask.expand_as(core)])
    return tuple(flat)


def merge_cores(parts: list[tuple[torch.Tensor, TTCores]], num_rows: int) -> TTCores:
    """One :class:`TTCores` of ``num_rows`` tokens from parts covering disjoint token sets.

    ``parts`` holds ``(rows, cores)``: ``cores`` token ``i`` becomes token ``rows[i]``.
    Every token must be covered exactly once; all parts share one tensor shape.
    """
    shape = parts[0][1].shape
    order = len(shape)
    ranks = torch.zeros(num_rows, order + 1, dtype=torch.int64)
    for rows, part in parts:
        ranks[rows] = part.ranks.to(torch.int64)
    if bool((ranks[:, 0] == 0).any()):
        raise ValueError("merge_cores: the parts do not cover every token")
    merged = TTCores(shape, ranks, tuple(torch.empty(0) for _ in shape))
    starts = merged.offsets()[:-1]
    flat = [torch.empty(int(s), dtype=torch.float32) for s in merged.core_sizes().sum(0)]
    for rows, part in parts:
        sizes, local = part.core_sizes(), part.offsets()[:-1]
        for k in range(order):
            # destination of every stored value: its token's start in the merged core plus
            # its position within the token's own core
            shift = torch.repeat_interleave(starts[rows, k] - local[:, k], sizes[:, k])
            flat[k][shift + torch.arange(int(sizes[:, k].sum()))] = part.cores[k].to(torch.float32)
    return TTCores(shape, ranks, tuple(flat))
