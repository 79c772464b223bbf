"""Per-phase energy of generation: prefill per prompt token, decode per output token.

A generation query has two phases on the device's monotonic clock: *prefill*, from the
query's start to its first new token (``ttft_s``: the prompt's forward pass and the first
decoding step), and *decode*, from there to the end (every further token). A phase's
energy over a group of queries is the sum of the energies integrated over each query's
own interval of that phase (prefill intervals are short and not contiguous), divided by
the phase's tokens: the prompt tokens for prefill, the tokens after the first for decode.

A phase whose intervals together hold fewer than ``min_fresh_samples`` fresh meter
samples (or that a meter gap touches) is *under-resolved*: its energy is kept for the
record, but no per-token figure is given for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.energy import WindowEnergy

PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class PhaseInterval:
    """One query's interval of one phase and the tokens it produced or consumed."""

    phase: str
    t_start: float
    t_end: float
    tokens: int


@dataclass(frozen=True)
class PhaseEnergy:
    """A phase's energy summed over the intervals of a group of queries."""

    phase: str
    energy_j: float | None
    duration_s: float
    tokens: int
    fresh_samples: int
    under_resolved: bool

    @property
    def energy_j_per_token(self) -> float | None:
        """Joules per token; None when under-resolved, unmeasured or without tokens."""
        if self.under_resolved or self.energy_j is None or self.tokens <= 0:
            return None
        return self.energy_j / self.tokens


def intervals(result: Any) -> dict[str, PhaseInterval] | None:
    """The prefill and decode intervals of a query result; None without a phase split
    (no time to first token, or a task that does not decode)."""
    ttft = getattr(result, "ttft_s", None)
    decode_tokens = getattr(result, "decode_tokens", None)
    if ttft is None or decode_tokens is None:
        return None
    t_first = min(result.t_start + ttft, result.t_end)
    return {
        "prefill": PhaseInterval("prefill", result.t_start, t_first, result.prompt_tokens),
        "decode": PhaseInterval("decode", t_first, result.t_end, decode_tokens),
    }


def combine(
    phase: str,
    parts: Iterable[tuple[PhaseInterval, WindowEnergy | None]],
    min_fresh_samples: int,
) -> PhaseEnergy:
    """Sum the energies of one phase's intervals (each integrated on its own)."""
    energy: float | None = 0.0
    duration = 0.0
    tokens = fresh = 0
    gap = False
    count = 0
    for interval, measured in parts:
        count += 1
        duration += interval.t_end - interval.t_start
        tokens += interval.tokens
        if measured is None or measured.energy_j is None:
            energy = None
            continue
        fresh += measured.fresh_samples
        gap = gap or measured.gap
        if energy is not None:
            energy += measured.energy_j
    if count == 0:
        energy = None
    return PhaseEnergy(
        phase=phase,
        energy_j=energy,
        duration_s=duration,
        tokens=tokens,
        fresh_samples=fresh,
        under_resolved=energy is None or gap or fresh < min_fresh_samples,
    )


def measure(
    results: Iterable[Any],
    integrate: Callable[[float, float], WindowEnergy | None],
    min_fresh_samples: int,
) -> dict[str, PhaseEnergy] | None:
    """Per-phase energy over ``results`` (queries); ``integrate(t0, t1)`` gives the energy
    of one interval. None when no query has a phase split."""
    parts: dict[str, list[tuple[PhaseInterval, WindowEnergy | None]]] = {p: [] for p in PHASES}
    for result in results:
        split = intervals(result)
        if split is None:
            continue
        for phase, interval in split.items():
            parts[phase].append((interval, integrate(interval.t_start, interval.t_end)))
    if not parts["prefill"]:
        return None
    return {p: combine(p, parts[p], min_fresh_samples) for p in PHASES}


def query_fields(result: Any, integrate: Callable[[float, float], WindowEnergy | None]) -> dict:
    """The per-phase fields of one ``query`` event (energies and fresh sample counts)."""
    split = intervals(result)
    fields: dict[str, Any] = {"decode_tokens": getattr(result, "decode_tokens", None)}
    for phase in PHASES:
        measured = None if split is None else integrate(split[phase].t_start, split[phase].t_end)
        fields[f"{phase}_energy_j"] = None if measured is None else measured.energy_j
        fields[f"{phase}_fresh_samples"] = None if measured is None else measured.fresh_samples
    return fields


def window_fields(phases: dict[str, PhaseEnergy] | None) -> dict[str, Any]:
    """The per-phase fields of a ``queries`` window event (null without a phase split)."""
    fields: dict[str, Any] = {}
    for phase in PHASES:
        energy = None if phases is None else phases[phase]
        fields[f"{phase}_energy_j"] = None if energy is None else energy.energy_j
        fields[f"{phase}_tokens"] = None if energy is None else energy.tokens
        fields[f"{phase}_fresh_samples"] = None if energy is None else energy.fresh_samples
        fields[f"{phase}_under_resolved"] = None if energy is None else energy.under_resolved
        fields[f"energy_j_per_{phase}_token"] = (
            None if energy is None else energy.energy_j_per_token
        )
    return fields
