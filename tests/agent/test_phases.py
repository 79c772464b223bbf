"""Per-phase energy: prefill and decode intervals, their sums and the under-resolved flag."""

from __future__ import annotations

from agent import phases
from agent.energy import integrate
from agent.meters.base import Sample
from tasks.workloads.base import QueryResult


def _query(t0: float, ttft: float, t1: float, prompt: int = 10, decode: int | None = 7):
    return QueryResult(
        index=0,
        t_start=t0,
        t_end=t1,
        prompt_tokens=prompt,
        output_tokens=(decode or 0) + 1,
        ttft_s=ttft,
        decode_tokens=decode,
    )


def _samples(watts, t0: float, t1: float, step: float) -> list[Sample]:
    n = round((t1 - t0) / step)
    return [Sample(t0 + i * step, watts(t0 + i * step)) for i in range(n + 1)]


def test_a_query_splits_at_its_first_token() -> None:
    split = phases.intervals(_query(10.0, 0.25, 11.0))
    assert split is not None
    assert (split["prefill"].t_start, split["prefill"].t_end, split["prefill"].tokens) == (
        10.0,
        10.25,
        10,
    )
    assert (split["decode"].t_start, split["decode"].t_end, split["decode"].tokens) == (
        10.25,
        11.0,
        7,
    )


def test_queries_without_a_first_token_time_have_no_phases() -> None:
    assert phases.intervals(_query(0.0, 0.1, 1.0, decode=None)) is None
    no_ttft = QueryResult(0, 0.0, 1.0, 5, 0)
    assert phases.intervals(no_ttft) is None
    assert phases.measure([no_ttft], lambda a, b: None, 2) is None


def test_phase_energy_sums_each_querys_own_intervals() -> None:
    """A 2 W prefill and a 1 W decode, three queries with idle gaps between them: each
    phase's energy is its own power times its own time, whatever lies between."""
    queries = [_query(t, 0.2, t + 1.0) for t in (0.0, 2.0, 4.0)]

    def watts(t: float) -> float:
        q = next((q for q in queries if q.t_start <= t < q.t_end), None)
        if q is None:
            return 5.0  # between queries: not part of either phase
        return 2.0 if t < q.t_start + q.ttft_s else 1.0

    samples = _samples(watts, -0.1, 5.1, 0.001)
    measured = phases.measure(queries, lambda a, b: integrate(samples, a, b), 10)
    assert measured is not None
    prefill, decode = measured["prefill"], measured["decode"]
    assert abs(prefill.energy_j - 3 * 0.2 * 2.0) < 0.01
    assert abs(decode.energy_j - 3 * 0.8 * 1.0) < 0.01
    assert prefill.tokens == 30 and decode.tokens == 21
    assert abs(prefill.energy_j_per_token - 1.2 / 30) < 1e-3
    assert abs(decode.energy_j_per_token - 2.4 / 21) < 1e-3
    assert not prefill.under_resolved and not decode.under_resolved
    # the phases partition each query: their energies add up to the query's
    whole = sum(integrate(samples, q.t_start, q.t_end).energy_j for q in queries)
    assert abs(prefill.energy_j + decode.energy_j - whole) < 1e-9


def test_a_phase_with_too_few_fresh_samples_is_flagged_not_given_a_figure() -> None:
    """A 2 Hz meter holds no sample inside a 50 ms prefill: under-resolved, no J/token."""
    queries = [_query(t, 0.05, t + 1.0) for t in (0.1, 1.3, 2.6)]
    samples = _samples(lambda t: 3.0, 0.0, 4.0, 0.5)
    measured = phases.measure(queries, lambda a, b: integrate(samples, a, b), 4)
    assert measured is not None
    prefill, decode = measured["prefill"], measured["decode"]
    assert prefill.fresh_samples < 4 and prefill.under_resolved
    assert prefill.energy_j is not None and prefill.energy_j_per_token is None
    assert decode.fresh_samples >= 4 and not decode.under_resolved
    assert decode.energy_j_per_token is not None
    fields = phases.window_fields(measured)
    assert fields["prefill_under_resolved"] is True
    assert fields["energy_j_per_prefill_token"] is None
    assert fields["energy_j_per_decode_token"] == decode.energy_j_per_token


def test_an_unmeasured_interval_leaves_the_phase_without_energy() -> None:
    queries = [_query(0.0, 0.2, 1.0)]
    measured = phases.measure(queries, lambda a, b: None, 1)
    assert measured is not None
    assert measured["prefill"].energy_j is None and measured["prefill"].under_resolved
    assert phases.window_fields(None)["energy_j_per_decode_token"] is None
