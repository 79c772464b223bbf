"""An LM head that computes logits from the compressed table, with the fastest kernel.

A tied model (SmolLM2: the 49,152 x 576 head is the input table) only shrinks in memory
and reads fewer bytes per decoded token when its head uses the compressed table itself.
An embedding module that can serve as a head provides ``head_kernels()``: candidate
kernels, each a name and a builder returning ``logits(x)`` for a 2-D float32 ``x`` of
shape ``(n, d)``. Which kernel is fastest differs by machine (AVX-512 with bf16, AVX2,
NEON on a Pi) and torch build, so :class:`CompressedHead` times every candidate at load
on this machine and keeps the fastest of those whose logits agree with the exact
(float32) ones; a candidate that raises (a kernel this build lacks) is skipped.

Only candidates whose resident data is the compressed table (plus transient chunks) are
offered, so the table is never held twice.

Device side: torch only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tasks.errors import ArtifactError

#: logits(x) for x of shape (n, d), float32 -> (n, V) float32
Kernel = Callable[[torch.Tensor], torch.Tensor]
#: rows handled per step by the chunked dequantise-then-matmul kernels
CHUNK_ROWS = 4096
#: a candidate is accepted when its largest logit error is within this share of the
#: largest absolute exact logit (bf16 activations round to ~0.4 %)
TOLERANCE = 0.02
#: torch's int8/int4 weight-only kernels read whole blocks of output rows: tables given to
#: them are padded with zero rows to a multiple of this (a ragged end can crash them)
KERNEL_ROW_BLOCK = 64
#: timed calls per candidate for the decode shape (one token)
TIMED_CALLS = 7


@dataclass(frozen=True)
class Candidate:
    """A head kernel offered by an embedding module: name and lazy builder."""

    name: str
    build: Callable[[], Kernel]
    #: what the kernel reads per logit row, in words (for reports)
    note: str = ""


@dataclass
class KernelChoice:
    """What the run-time selection measured and chose."""

    chosen: str
    #: candidate -> median seconds for one decoded token (None: rejected or failed)
    decode_s: dict[str, float | None] = field(default_factory=dict)
    #: candidate -> largest logit error relative to the largest exact logit
    rel_error: dict[str, float | None] = field(default_factory=dict)
    #: candidate -> why it was not used, if it failed or disagreed
    rejected: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "decode_s": self.decode_s,
            "rel_error": self.rel_error,
            "rejected": self.rejected,
        }


def chunked(
    rows: int, dequantize: Callable[[int, int], torch.Tensor], dtype: torch.dtype
) -> Kernel:
    """``x @ W.T`` with ``W`` rebuilt ``CHUNK_ROWS`` rows at a time in ``dtype``.

    ``dequantize(start, stop)`` returns rows ``start:stop`` of the table in ``dtype``.
    """

    def logits(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(x.shape[0], rows, dtype=torch.float32)
        xs = x.to(dtype)
        for start in range(0, rows, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, rows)
            out[:, start:stop] = (xs @ dequantize(start, stop).T).to(torch.float32)
        return out

    return logits


def pad_rows(table: torch.Tensor, block: int = KERNEL_ROW_BLOCK) -> torch.Tensor:
    """``table`` with zero rows appended up to a multiple of ``block`` rows."""
    extra = (-table.shape[0]) % block
    if not extra:
        return table.contiguous()
    return torch.cat([table, table.new_zeros(extra, *table.shape[1:])]).contiguous()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _time(kernel: Kernel, x: torch.Tensor, calls: int, best: float | None = None) -> float:
    """Median seconds per call; a kernel clearly slower than ``best`` (3x on its first
    timed call) is timed once only, so a slow fallback costs little at load."""
    kernel(x)  # warm-up (first call allocates, may pack)
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        kernel(x)
        samples.append(time.perf_counter() - started)
        if best is not None and samples[0] > 3 * best:
            break
    return _median(samples)


def _probe_inputs(dim: int, scale: float) -> torch.Tensor:
    """Deterministic hidden states for the agreement check, at the model's scale."""
    generator = torch.Generator().manual_seed(1234)
    return torch.randn(4, dim, generator=generator) * scale


def select_kernel(
    candidates: list[Candidate],
    reference_rows: Callable[[torch.Tensor], torch.Tensor],
    num_rows: int,
    dim: int,
    *,
    calls: int = TIMED_CALLS,
    only: str | None = None,
) -> tuple[Kernel, KernelChoice]:
    """Time every candidate that agrees with the exact logits; return the fastest.

    ``reference_rows(ids)`` gives exact float32 rows of the table (the agreement check
    runs on a deterministic sample of 512 rows). ``only`` forces one candidate by name.
    """
    if only is not None:
        candidates = [c for c in candidates if c.name == only]
        if not candidates:
            raise ArtifactError(f"no head kernel named {only!r} for this format")
    generator = torch.Generator().manual_seed(99)
    sample = torch.randperm(num_rows, generator=generator)[: min(512, num_rows)]
    exact_rows = reference_rows(sample).to(torch.float32)
    scale = float(exact_rows.norm(dim=1).mean().clamp_min(1e-12))
    probe = _probe_inputs(dim, 1.0 / scale * dim**0.5)
    exact = probe @ exact_rows.T
    peak = float(exact.abs().max().clamp_min(1e-12))
    choice = KernelChoice(chosen="")
    best: tuple[float, Kernel, str] | None = None
    one = probe[:1].contiguous()
    for cand in candidates:
        try:
            kernel = cand.build()
            got = kernel(probe)[:, sample]
            error = float((got - exact).abs().max()) / peak
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as exc:
            choice.decode_s[cand.name] = None
            choice.rel_error[cand.name] = None
            choice.rejected[cand.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            continue
        choice.rel_error[cand.name] = error
        if not error <= TOLERANCE:
            choice.decode_s[cand.name] = None
            choice.rejected[cand.name] = f"logits differ by {error:.3g} of the largest"
            continue
        seconds = _time(kernel, one, calls, None if best is None else best[0])
        choice.decode_s[cand.name] = seconds
        if best is None or seconds < best[0]:
            best = (seconds, kernel, cand.name)
        del kernel
    if best is None:
        raise ArtifactError(
            "no head kernel works for this format on this machine: "
            + "; ".join(f"{k}: {v}" for k, v in choice.rejected.items())
        )
    choice.chosen = best[2]
    return best[1], choice


def release_freed_heap() -> bool:
    """Hand the memory freed by the kernel selection's temporaries back to the system.

    glibc keeps freed blocks below its (adaptive) mmap threshold in the heap, so the
    timed candidates' chunks would otherwise stay in the resident set for the whole run;
    ``malloc_trim`` returns them. A no-op (False) where the C library has no such call.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return False
    return bool(trim(0)) if trim is not None else False


class CompressedHead(nn.Module):
    """LM head reading the compressed table of a tied embedding module.

    ``source`` is the input-embedding module (it owns the data; this module keeps a
    reference only, so the table is resident once). The kernel is chosen at construction
    by :func:`select_kernel`; :attr:`choice` says what was measured.
    """

    def __init__(self, source: nn.Module, *, only: str | None = None) -> None:
        super().__init__()
        kernels = getattr(source, "head_kernels", None)
        if not callable(kernels):
            raise ArtifactError(
                f"{type(source).__name__} cannot serve as an LM head",
                hint="use head=keep-dense, or a format with a compressed head",
            )
        # not a submodule: the embedding module is registered on the model already
        object.__setattr__(self, "_source", source)
        self.num_embeddings = int(source.num_embeddings)
        self.embedding_dim = int(source.embedding_dim)
        self.in_features, self.out_features = self.embedding_dim, self.num_embeddings
        with torch.inference_mode():
            self._kernel, self.choice = select_kernel(
                kernels(),
                source.rows,
                self.num_embeddings,
                self.embedding_dim,
                only=only,
            )
        release_freed_heap()

    @property
    def source(self) -> nn.Module:
        return self._source

    @property
    def kernel_name(self) -> str:
        return self.choice.chosen

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        lead = hidden.shape[:-1]
        x = hidden.reshape(-1, self.embedding_dim).to(torch.float32)
        return self._kernel(x).reshape(*lead, self.num_embeddings).to(hidden.dtype)

    def extra_repr(self) -> str:
        return f"{self.embedding_dim}, {self.num_embeddings}, kernel={self.kernel_name}"
