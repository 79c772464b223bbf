"""``mixed:bits=B``: bits spread over tokens under an average budget, by importance.

Every row gets one of the widths :data:`WIDTHS`: 2, 3 or 4 bits in groups of ``group``
channels (affine, each group with a bf16 scale and offset), or 8 bits per row
(symmetric, one float32 scale). A row's cost counts its codes and its scales, so the
budget ``B`` is the average number of stored bits per weight and the ratio against
float32 is ``32 / B`` (or a little more: the allocation never exceeds the budget).

Which row gets which width minimises ``sum_v importance_v * ||e_v - e_hat_v||^2`` under
the budget, by a Lagrange multiplier found by bisection (each row then takes the width
minimising ``importance_v * error + lambda * bits``). The importance of a token is taken
from the model itself: the probability the model gives it, averaged over every position
of the calibration text (:func:`tasks.compression.calibration.model_importance`). Unlike
counts in a small text, that prior is smooth over the whole vocabulary: a token the text
never shows still gets the share the model expects. ``importance=counts`` (calibration
counts plus one) and ``importance=uniform`` are there to compare against.

Artifact tensors: per width, the row ids and the codes bit-packed to their width, with
the scales; the device keeps the 2-4 bit rows as 4-bit codes (the layout of torch's int4
kernel when that kernel is chosen for the head) and the 8-bit rows as int8.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tasks.compression.base import CompressionResult, Progress, relative_row_errors, tensor_bytes
from tasks.compression.head import Candidate, Kernel, chunked, pad_rows
from tasks.compression.spec import VariantSpec
from tasks.errors import ArtifactError, CompressionError

#: widths a row can take; the low ones are grouped, 8 is per row
LOW_WIDTHS = (2, 3, 4)
HIGH_WIDTH = 8
WIDTHS = (*LOW_WIDTHS, HIGH_WIDTH)
#: bits of the bf16 scale and offset of one group, and of the float32 scale of an 8-bit row
GROUP_SCALE_BITS = 32
ROW_SCALE_BITS = 32
#: the code that stands for ``zero`` (torch's int4 kernel subtracts 8 from every code)
ZERO_CODE = 8
#: bits per row of the stored width index
WIDTH_INDEX_BITS = 2


def row_bits(width: int, dim: int, group: int) -> int:
    """Stored bits of one row of ``dim`` weights at ``width``."""
    if width == HIGH_WIDTH:
        return HIGH_WIDTH * dim + ROW_SCALE_BITS
    return width * dim + (dim // group) * GROUP_SCALE_BITS


def bits_range(dim: int, group: int) -> tuple[float, float]:
    """Smallest and largest average bits per weight the format can take."""
    extra = WIDTH_INDEX_BITS
    return (
        (row_bits(min(WIDTHS), dim, group) + extra) / dim,
        (row_bits(HIGH_WIDTH, dim, group) + extra) / dim,
    )


# --- quantisers ----------------------------------------------------------------------


def quantize_low(table: torch.Tensor, width: int, group: int) -> dict[str, torch.Tensor]:
    """Affine ``width``-bit codes per group of ``group`` channels.

    ``x ~ (code - 8) * scale + zero``, with ``scale`` and ``zero`` stored in bfloat16: the
    form torch's int4 weight-only kernel computes with, so the head reads exactly the
    values the embedding does. Both are rounded first and the codes chosen against the
    rounded values.
    """
    rows, dim = table.shape
    x = table.to(torch.float32).reshape(rows, dim // group, group)
    low, high = x.amin(dim=-1), x.amax(dim=-1)
    levels = (1 << width) - 1
    scale = ((high - low) / levels).to(torch.bfloat16)
    scale_f = scale.to(torch.float32)
    safe = torch.where(scale_f > 0, scale_f, torch.ones(()))
    # centre the rounded grid on the group's range, then round the offset once
    mid = (low + high) / 2 - (levels / 2 - ZERO_CODE) * scale_f
    zero = mid.to(torch.bfloat16)
    zero_f = zero.to(torch.float32)
    codes = ((x - zero_f[..., None]) / safe[..., None] + ZERO_CODE).round().clamp(0, levels)
    return {"codes": codes.to(torch.uint8).reshape(rows, dim), "scale": scale, "zero": zero}


def dequantize_low(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group: int
) -> torch.Tensor:
    rows, dim = codes.shape
    x = codes.to(torch.float32).reshape(rows, dim // group, group) - ZERO_CODE
    x = x * scale.to(torch.float32)[..., None] + zero.to(torch.float32)[..., None]
    return x.reshape(rows, dim)


def quantize_high(table: torch.Tensor) -> dict[str, torch.Tensor]:
    """Symmetric int8 codes per row with a float32 scale (torch's int8 kernel layout)."""
    x = table.to(torch.float32)
    scale = x.abs().amax(dim=1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones(()))
    codes = (x / safe[:, None]).round().clamp(-127, 127).to(torch.int8)
    return {"codes": codes, "scale": scale}


def dequantize_high(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return codes.to(torch.float32) * scale[:, None]


def pack_bits(codes: torch.Tensor, width: int) -> torch.Tensor:
    """Codes (< 2**width) packed tightly, ``width`` bits each, into uint8 bytes."""
    flat = codes.reshape(-1).to(torch.uint8)
    bits = (flat[:, None] >> torch.arange(width, dtype=torch.uint8)) & 1
    bits = bits.reshape(-1)
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, torch.zeros(pad, dtype=torch.uint8)])
    weights = (1 << torch.arange(8, dtype=torch.int32)).to(torch.uint8)
    return (bits.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.int32).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, width: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``count`` codes as uint8."""
    bits = (packed[:, None] >> torch.arange(8, dtype=torch.uint8)) & 1
    bits = bits.reshape(-1)[: count * width]
    if bits.numel() != count * width:
        raise ArtifactError(f"packed codes hold {bits.numel()} bits, {count * width} expected")
    weights = (1 << torch.arange(width, dtype=torch.int32)).to(torch.uint8)
    return (bits.reshape(count, width) * weights).sum(dim=1, dtype=torch.int32).to(torch.uint8)


# --- allocation ----------------------------------------------------------------------


def width_errors(
    table: torch.Tensor, group: int, metric: torch.Tensor | None = None
) -> torch.Tensor:
    """(V, len(WIDTHS)) float64 squared reconstruction error of every row at every width.

    ``metric`` (optional, (d,) channel weights): the error as the first layer sees it,
    ``sum_c metric_c (x_c - x_hat_c)^2 / mean(x^2)``: an RMS norm divides every row by its
    own scale and multiplies channel ``c`` by its gain, so ``metric`` is the squared gain.
    """
    x = table.to(torch.float32)
    weights = None if metric is None else metric.to(torch.float64)[None, :]
    scale = None if metric is None else x.double().pow(2).mean(dim=1).clamp_min(1e-30)

    def error(approx: torch.Tensor) -> torch.Tensor:
        sq = (x - approx).double().pow(2)
        if weights is None:
            return sq.sum(dim=1)
        return (sq * weights).sum(dim=1) / scale

    errors = []
    for width in LOW_WIDTHS:
        q = quantize_low(x, width, group)
        errors.append(error(dequantize_low(q["codes"], q["scale"], q["zero"], group)))
    q = quantize_high(x)
    errors.append(error(dequantize_high(q["codes"], q["scale"])))
    return torch.stack(errors, dim=1)


def allocate(
    errors: torch.Tensor, importance: torch.Tensor, costs: torch.Tensor, budget: float
) -> torch.Tensor:
    """Width index per row minimising ``sum importance * error`` with total cost <= budget.

    Lagrangian relaxation: for a multiplier ``lam`` each row takes the width minimising
    ``importance * error + lam * cost``; the cost falls as ``lam`` grows, and bisection
    (on a log scale) finds the smallest ``lam`` whose allocation fits. Rows are then
    upgraded greedily, best error saved per extra bit first, while the budget allows.
    """
    weighted = errors * importance.to(torch.float64)[:, None]
    costs = costs.to(torch.float64)

    def pick(lam: float) -> torch.Tensor:
        return torch.argmin(weighted + lam * costs[None, :], dim=1)

    cheapest = torch.full((errors.shape[0],), int(torch.argmin(costs)), dtype=torch.int64)
    if float(costs[cheapest].sum()) > budget:
        raise CompressionError("the budget is below the cheapest allocation")
    lo, hi = 1e-30, 1e30
    if float(costs[pick(lo)].sum()) <= budget:
        return pick(lo)
    for _ in range(200):
        mid = (lo * hi) ** 0.5
        if float(costs[pick(mid)].sum()) <= budget:
            hi = mid
        else:
            lo = mid
        if hi / lo < 1 + 1e-9:
            break
    choice = pick(hi)
    return _fill(choice, weighted, costs, budget)


def _fill(
    choice: torch.Tensor, weighted: torch.Tensor, costs: torch.Tensor, budget: float
) -> torch.Tensor:
    """Spend what the bisection left: upgrade rows, largest saving per bit first."""
    spare = budget - float(costs[choice].sum())
    rows = torch.arange(choice.numel())
    for _ in range(4):
        if spare <= 0:
            break
        current_err = weighted[rows, choice]
        current_cost = costs[choice]
        extra = costs[None, :] - current_cost[:, None]
        gain = current_err[:, None] - weighted
        rate = torch.where(extra > 0, gain / extra.clamp_min(1e-9), torch.zeros(()))
        best_rate, best_width = rate.max(dim=1)
        order = torch.argsort(best_rate, descending=True)
        step_cost = extra[rows, best_width][order]
        positive = best_rate[order] > 0
        total = torch.cumsum(step_cost, dim=0)
        take = order[(total <= spare) & positive]
        if take.numel() == 0:
            break
        choice = choice.clone()
        choice[take] = best_width[take]
        spare = budget - float(costs[choice].sum())
    return choice


# --- compress ------------------------------------------------------------------------


def _importance(
    spec: VariantSpec,
    rows: int,
    token_counts: torch.Tensor | None,
    importance: torch.Tensor | None,
) -> tuple[torch.Tensor, str]:
    kind = spec.get("importance")
    if kind == "uniform":
        return torch.ones(rows, dtype=torch.float64), kind
    if kind == "counts":
        if token_counts is None:
            raise CompressionError("importance=counts needs the calibration token counts")
        return token_counts.to(torch.float64) + 1.0, kind
    if importance is None:
        raise CompressionError(
            "importance=model needs the model's token probabilities on the calibration text"
        )
    if importance.shape != (rows,):
        raise CompressionError(f"importance of shape {tuple(importance.shape)} for {rows} rows")
    return importance.to(torch.float64), kind


def compress(
    table: torch.Tensor,
    spec: VariantSpec,
    *,
    progress: Progress | None = None,
    token_counts: torch.Tensor | None = None,
    importance: torch.Tensor | None = None,
    layer0_gain: torch.Tensor | None = None,
) -> CompressionResult:
    """Allocate widths under the ``bits=`` budget and quantise every row at its width."""
    rows, dim = (int(s) for s in table.shape)
    group = int(spec.get("group"))
    budget_bits = float(spec.get("bits"))
    _check_budget(dim, group, budget_bits)
    weights, kind = _importance(spec, rows, token_counts, importance)
    power = float(spec.get("power"))
    weights = weights.clamp_min(1e-300).pow(power)
    if progress is not None:
        progress("quantising at every width", 0, 2)
    errors = width_errors(table, group, _channel_metric(spec, dim, layer0_gain))
    costs = torch.tensor([row_bits(w, dim, group) for w in WIDTHS], dtype=torch.float64)
    if progress is not None:
        progress("allocating widths", 1, 2)
    # the width of every row is stored too, in WIDTH_INDEX_BITS bits
    budget = budget_bits * rows * dim - WIDTH_INDEX_BITS * rows
    choice = allocate(errors, weights, costs, budget)
    tensors, approx = _quantise_rows(table, choice, group)
    stored_bits = float(costs[choice].sum()) + WIDTH_INDEX_BITS * rows
    mass = weights / weights.sum()
    alloc = {
        str(w): {
            "rows": int((choice == k).sum()),
            "importance_share": float(mass[choice == k].sum()),
        }
        for k, w in enumerate(WIDTHS)
    }
    return CompressionResult(
        tensors=tensors,
        method={
            "name": "mixed",
            "rows": rows,
            "dim": dim,
            "bits": budget_bits,
            "group": group,
            "importance": kind,
            "metric": spec.get("metric"),
            "power": power,
            "widths": list(WIDTHS),
            "bits_per_weight": stored_bits / (rows * dim),
            "allocation": alloc,
        },
        # the width index is stored data too
        params=tensor_bytes(tensors) // 4,
        payload_bytes=tensor_bytes(tensors),
        row_errors=relative_row_errors(table, approx),
    )


def _check_budget(dim: int, group: int, budget_bits: float) -> None:
    """The group divides the rows, and the budget is one the format can meet."""
    if dim % group:
        raise CompressionError(
            f"group={group} does not divide the hidden size {dim}",
            hint="pick a group that divides it (32, 64, ...)",
        )
    low, _ = bits_range(dim, group)
    if budget_bits < low:
        raise CompressionError(
            f"mixed:bits={budget_bits:g} cannot be met: with group={group} every row "
            f"costs at least {low:.4g} bits per weight; the closest achievable ratio is "
            f"{32 / low:.3g}x (bits={low:.4g})",
            hint=f"ask for bits >= {low:.4g}, or a larger group",
        )


def _channel_metric(
    spec: VariantSpec, dim: int, layer0_gain: torch.Tensor | None
) -> torch.Tensor | None:
    """Per-channel weights of the error (``metric=layer0``: the norm's squared gain)."""
    if spec.get("metric") != "layer0":
        return None
    if layer0_gain is None or layer0_gain.shape != (dim,):
        raise CompressionError(
            "metric=layer0 needs the gain of the first layer's input norm",
            hint="this model has none that tasks.models.layer0_gain can find; use metric=l2",
        )
    return layer0_gain.to(torch.float64).pow(2)


def _quantise_rows(
    table: torch.Tensor, choice: torch.Tensor, group: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every row at its chosen width: (the stored tensors, the rows as decoded)."""
    rows, dim = (int(s) for s in table.shape)
    tensors: dict[str, torch.Tensor] = {"width_index": pack_bits(choice, WIDTH_INDEX_BITS)}
    approx = torch.empty(rows, dim, dtype=torch.float32)
    for k, width in enumerate(WIDTHS):
        ids = torch.nonzero(choice == k).flatten()
        part = table[ids].to(torch.float32)
        if width == HIGH_WIDTH:
            q = quantize_high(part)
            tensors["w8_codes"] = q["codes"]
            tensors["w8_scale"] = q["scale"]
            approx[ids] = dequantize_high(q["codes"], q["scale"])
            continue
        q = quantize_low(part, width, group) if ids.numel() else None
        if q is None:
            q = {
                "codes": torch.zeros(0, dim, dtype=torch.uint8),
                "scale": torch.zeros(0, dim // group, dtype=torch.bfloat16),
                "zero": torch.zeros(0, dim // group, dtype=torch.bfloat16),
            }
        tensors[f"w{width}_codes"] = pack_bits(q["codes"], width)
        tensors[f"w{width}_scale"] = q["scale"].contiguous()
        tensors[f"w{width}_zero"] = q["zero"].contiguous()
        approx[ids] = dequantize_low(q["codes"], q["scale"], q["zero"], group)
    return tensors, approx


# --- device side ---------------------------------------------------------------------

#: block sizes of torch's CPU int4 packing tried when reading rows back from it
_INT4_BLOCKS = (64, 32, 16, 8)


def int4_layout() -> int | None:
    """Rows per block of ``_convert_weight_to_int4pack_for_cpu`` on this machine, if it is
    one of the known interleavings (None: the kernel is missing or packs otherwise)."""
    try:
        rows, cols = 128, 64
        q = (torch.arange(rows * cols, dtype=torch.int32).reshape(rows, cols) * 7) % 16
        packed = torch._convert_weight_to_int4pack_for_cpu(q, 1).reshape(-1)
    except (RuntimeError, AttributeError):
        return None
    for block in _INT4_BLOCKS:
        qb = q.reshape(rows // block, block, cols)
        guess = qb[:, : block // 2, :] | (qb[:, block // 2 :, :] << 4)
        if torch.equal(guess.permute(0, 2, 1).reshape(-1).to(torch.uint8), packed):
            return block
    return None


#: rows packed at a time into torch's int4 layout (bounds the temporaries at load)
_PACK_ROWS = 8192


def pack_int4(
    codes_of: Callable[[int, int], torch.Tensor], rows: int, block: int, dim: int
) -> torch.Tensor:
    """Codes < 16 of ``rows`` rows (``codes_of(a, b)``: rows a..b-1 as uint8) in the
    layout of ``_convert_weight_to_int4pack_for_cpu`` with ``block`` rows per block
    (:func:`int4_layout`), zero rows padding the last block; packed a few thousand rows
    at a time, so that loading never holds the whole table as int32."""
    padded = -(-rows // block) * block
    step = max(block, _PACK_ROWS // block * block)
    out = torch.empty(padded, dim // 2, dtype=torch.uint8)
    for start in range(0, padded, step):
        stop = min(start + step, padded)
        q = torch.zeros(stop - start, dim, dtype=torch.uint8)
        if start < rows:
            q[: min(stop, rows) - start] = codes_of(start, min(stop, rows))
        qb = q.reshape(-1, block, dim)
        pair = qb[:, : block // 2, :] | (qb[:, block // 2 :, :] << 4)
        out[start:stop] = pair.permute(0, 2, 1).reshape(stop - start, dim // 2)
    return out


def _nibbles(codes: torch.Tensor) -> torch.Tensor:
    """(n, d) codes < 16 -> (n, d/2) bytes, column 2j low, 2j+1 high."""
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()


def _unnibble(packed: torch.Tensor) -> torch.Tensor:
    out = torch.empty(packed.shape[0], packed.shape[1] * 2, dtype=torch.uint8)
    out[:, 0::2] = packed & 15
    out[:, 1::2] = packed >> 4
    return out


class MixedEmbedding(nn.Module):
    """Rows at 2-4 bits (held as 4-bit codes, group scale and offset) or 8 bits (int8 with
    a row scale); serves as a tied LM head."""

    def __init__(
        self, tensors: dict[str, torch.Tensor], method: dict[str, Any], dtype: torch.dtype
    ) -> None:
        super().__init__()
        group = int(method["group"])
        rows, dim = int(method["rows"]), int(method["dim"])
        index = unpack_bits(tensors["width_index"], WIDTH_INDEX_BITS, rows).to(torch.int64)
        if int(index.max()) >= len(WIDTHS) or tuple(tensors["w8_codes"].shape[1:]) != (dim,):
            raise ArtifactError("cores.safetensors: the width index or the codes are damaged")
        ids = {w: torch.nonzero(index == k).flatten() for k, w in enumerate(WIDTHS)}
        self.num_embeddings, self.embedding_dim, self.group = rows, dim, group
        self.out_dtype = dtype
        low_ids = torch.cat([ids[w] for w in LOW_WIDTHS])
        # 2-4 bit rows: 4-bit codes with the group's scale and offset
        codes, scales, mins = [], [], []
        for w in LOW_WIDTHS:
            n = int(ids[w].numel())
            codes.append(unpack_bits(tensors[f"w{w}_codes"], w, n * dim).reshape(n, dim))
            scales.append(tensors[f"w{w}_scale"].reshape(n, dim // group))
            mins.append(tensors[f"w{w}_zero"].reshape(n, dim // group))
        slot = torch.full((rows,), -1, dtype=torch.int64)
        where = torch.full((rows,), -1, dtype=torch.int8)
        slot[low_ids] = torch.arange(low_ids.numel())
        where[low_ids] = 0
        slot[ids[HIGH_WIDTH]] = torch.arange(ids[HIGH_WIDTH].numel())
        where[ids[HIGH_WIDTH]] = 1
        self.register_buffer("slot", slot)
        self.register_buffer("where", where)
        self.register_buffer("low_ids", low_ids)
        self.register_buffer("high_ids", ids[HIGH_WIDTH])
        self.register_buffer("low_codes", _nibbles(torch.cat(codes)))
        self.register_buffer("low_scale", torch.cat(scales).to(torch.float32))
        self.register_buffer("low_zero", torch.cat(mins).to(torch.float32))
        # zero rows up to the int8 kernel's block; lookups never reach them
        self.register_buffer("high_codes", pad_rows(tensors["w8_codes"].to(torch.int8)))
        self.register_buffer("high_scale", pad_rows(tensors["w8_scale"].to(torch.float32)))
        #: rows per block when low_codes hold torch's int4 layout (None: our own layout)
        self.low_block: int | None = None

    # rows ------------------------------------------------------------------------------

    def _low_codes(self, slots: torch.Tensor) -> torch.Tensor:
        if self.low_block is None:
            return _unnibble(self.low_codes[slots])
        block, dim = self.low_block, self.embedding_dim
        half = block // 2
        flat = self.low_codes.reshape(-1)
        base = (slots // block) * (dim * half) + (slots % half)
        cols = torch.arange(dim) * half
        byte = flat[base[:, None] + cols[None, :]]
        high = ((slots % block) >= half)[:, None]
        return torch.where(high, byte >> 4, byte & 15)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Float32 rows ``ids`` (1-D)."""
        out = torch.empty(ids.numel(), self.embedding_dim, dtype=torch.float32)
        where, slot = self.where[ids], self.slot[ids]
        low = where == 0
        if bool(low.any()):
            s = slot[low]
            out[low] = dequantize_low(
                self._low_codes(s), self.low_scale[s], self.low_zero[s], self.group
            )
        high = ~low
        if bool(high.any()):
            s = slot[high]
            out[high] = dequantize_high(self.high_codes[s], self.high_scale[s])
        return out

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.rows(input_ids.reshape(-1))
        return out.reshape(*input_ids.shape, self.embedding_dim).to(self.out_dtype)

    @torch.no_grad()
    def materialize(self) -> torch.Tensor:
        return self.rows(torch.arange(self.num_embeddings)).to(self.out_dtype)

    # head ------------------------------------------------------------------------------

    def _scatter(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        out = torch.empty(low.shape[0], self.num_embeddings, dtype=torch.float32)
        out[:, self.low_ids] = low.to(torch.float32)
        out[:, self.high_ids] = high.to(torch.float32)
        return out

    def head_kernels(self) -> list[Candidate]:
        """torch's int4 and int8 weight-only kernels (bf16 activations), or chunks
        dequantised to float32 / bf16."""

        def low_chunk(a: int, b: int) -> torch.Tensor:
            return dequantize_low(
                self._low_codes(torch.arange(a, b)),
                self.low_scale[a:b],
                self.low_zero[a:b],
                self.group,
            )

        def high_chunk(a: int, b: int) -> torch.Tensor:
            return dequantize_high(self.high_codes[a:b], self.high_scale[a:b])

        def chunked_in(dtype: torch.dtype) -> Kernel:
            low_k = chunked(
                int(self.low_ids.numel()), lambda a, b: low_chunk(a, b).to(dtype), dtype
            )
            high_k = chunked(
                int(self.high_ids.numel()), lambda a, b: high_chunk(a, b).to(dtype), dtype
            )
            return lambda x: self._scatter(low_k(x), high_k(x))

        return [
            Candidate("int4pack+int8pack-bf16", self._packed_kernel, "int4/int8 weights, bf16"),
            Candidate("mixed-chunked-fp32", lambda: chunked_in(torch.float32), "fp32 chunks"),
            Candidate("mixed-chunked-bf16", lambda: chunked_in(torch.bfloat16), "bf16 chunks"),
        ]

    def _packed_kernel(self) -> Kernel:
        """Repack the 2-4 bit rows into torch's int4 layout (padded to its block) and use
        its kernel; the embedding then reads its rows from that layout too."""
        block = self.low_block or int4_layout()
        if block is None:
            raise RuntimeError("torch's int4 packing is missing or its layout is unknown")
        if self.embedding_dim % self.group or self.group not in (32, 64, 128, 256):
            raise RuntimeError(f"group {self.group} is not one the int4 kernel takes")
        n = int(self.low_ids.numel())
        padded_n = -(-n // block) * block
        if self.low_block is None:
            packed = pack_int4(
                lambda a, b: self._low_codes(torch.arange(a, b)), n, block, self.embedding_dim
            )
        else:
            packed = self.low_codes
        scale = self.low_scale
        zero = self.low_zero
        if padded_n != n:
            pad = torch.zeros(padded_n - n, scale.shape[1])
            scale, zero = torch.cat([scale, pad]), torch.cat([zero, pad])
        sz = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        high_scale = self.high_scale.to(torch.bfloat16)
        group, module = self.group, self
        n_high = int(self.high_ids.numel())

        def logits(x: torch.Tensor) -> torch.Tensor:
            xb = x.to(torch.bfloat16).contiguous()
            low = torch._weight_int4pack_mm_for_cpu(xb, packed, group, sz)[:, :n]
            high = torch._weight_int8pack_mm(xb, module.high_codes, high_scale)[:, :n_high]
            return module._scatter(low, high)

        logits(torch.zeros(1, self.embedding_dim))  # fails here if the kernel is missing
        if self.low_block is None:
            # adopt the packed layout only when it is chosen: see adopt()
            self._pending = (packed, block)
        return logits

    def adopt(self, kernel_name: str) -> None:
        """After the head chose its kernel: keep one copy of the 2-4 bit codes."""
        pending = getattr(self, "_pending", None)
        if kernel_name.startswith("int4pack") and pending is not None:
            self.low_codes, self.low_block = pending
        self._pending = None


def build_embedding(
    tensors: dict[str, torch.Tensor], method: dict[str, Any], *, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The :class:`MixedEmbedding` of an artifact."""
    return MixedEmbedding(tensors, method, dtype)
