"""Realistic agent event streams for tests, built with ``agent.protocol.make_event``.

:func:`trial_events` synthesises one trial as the agent would stream it: hello, phases,
a load and an idle window, the queries of each repetition with windows of back-to-back
queries, a perplexity score, power summaries and done. Numbers are deterministic for a
given ``seed`` and physically consistent (energy = power x time, net energy = energy -
idle power x time, samples = time / meter period).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.protocol import PROTOCOL_VERSION, make_event
from tasks import __version__


@dataclass(frozen=True)
class TrialShape:
    """What to synthesise; defaults are a Pi 5 with its PMIC meter, 2 x 12 queries."""

    task: str = "generate"
    reps: int = 2
    queries_per_rep: int = 12
    window_queries: int = 4
    latency_s: float = 0.30
    jitter: float = 0.05
    power_w: float = 6.0
    idle_power_w: float = 3.2
    meter_kind: str | None = "pi5-pmic"
    meter_period_s: float | None = 0.1
    output_tokens: int = 16
    #: what the agent measured over the trial (done event); None: an agent without them
    peak_rss_bytes: int | None = 400 * 2**20
    decode_s_per_token: float | None = 0.018
    perplexity: float | None = 7.1
    #: further task metrics, as (metric, value), e.g. a choice task's acc
    scores: tuple[tuple[str, float], ...] = ()
    throttled: bool = False
    status: str = "ok"
    warning: bool = True
    seq_start: int = 1
    t0: float = 1000.0
    wall0: datetime = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)
    seed: int = 0


def trial_events(shape: TrialShape | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """The event stream of one trial as ``Event.to_dict()`` dicts, seq from ``seq_start``."""
    shape = shape or TrialShape()
    if overrides:
        shape = TrialShape(**{**shape.__dict__, **overrides})
    rng = random.Random(shape.seed)
    metered = shape.meter_kind not in (None, "none")
    out: list[dict[str, Any]] = []
    clock = {"t": shape.t0}

    def emit(event_type: str, **data: Any) -> None:
        seq = shape.seq_start + len(out)
        wall = (
            (shape.wall0 + timedelta(seconds=clock["t"] - shape.t0))
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        out.append(make_event(seq, event_type, clock["t"], wall, **data).to_dict())

    def samples(duration_s: float) -> int:
        return int(duration_s / shape.meter_period_s) if metered and shape.meter_period_s else 0

    def energy(watts: float, duration_s: float) -> tuple[float | None, float | None]:
        if not metered:
            return None, None
        return watts * duration_s, (watts - shape.idle_power_w) * duration_s

    def window(
        kind: str,
        t_start: float,
        t_end: float,
        watts: float,
        queries: int,
        rep: int | None,
        index: int,
    ) -> None:
        duration = t_end - t_start
        e, net = energy(watts, duration)
        n = samples(duration)
        emit(
            "window",
            kind=kind,
            task=shape.task if kind == "queries" else None,
            rep=rep,
            index=index,
            t_start=t_start,
            t_end=t_end,
            duration_s=duration,
            queries=queries,
            energy_j=e,
            net_energy_j=net,
            energy_j_per_query=None if e is None or not queries else e / queries,
            net_energy_j_per_query=None if net is None or not queries else net / queries,
            mean_power_w=watts if metered else None,
            median_power_w=watts if metered else None,
            samples=n,
            fresh_samples=n,
            under_resolved=metered and n < 10,
            throttled=shape.throttled,
            temp_c_before=55.0,
            temp_c_after=58.0,
            freq_mhz_before=2400.0,
            freq_mhz_after=2400.0,
            throttled_flags_before="0x0",
            throttled_flags_after="0x0",
        )

    emit(
        "hello",
        protocol=PROTOCOL_VERSION,
        job_id=f"job-{shape.seed}",
        agent_version=__version__,
        bundle_sha256=None,
        host="pi5",
        board="raspberrypi5",
        python="3.11.2",
        torch="2.13.0",
        transformers="5.0.0",
        threads=4,
        meter_kind=shape.meter_kind or "none",
        meter_description="Pi 5 PMIC (output side)" if metered else "no meter",
        meter_period_s=shape.meter_period_s if metered else None,
    )
    emit("phase", phase="loading")
    load_start, clock["t"] = clock["t"], clock["t"] + 4.0
    window("load", load_start, clock["t"], shape.power_w + 0.5, 0, None, 0)
    emit("phase", phase="idle")
    idle_start, clock["t"] = clock["t"], clock["t"] + 5.0
    window("idle", idle_start, clock["t"], shape.idle_power_w, 0, None, 0)
    emit("phase", phase="running")
    for rep in range(shape.reps):
        batch_start, batch_watts, batch = clock["t"], [], 0
        for index in range(shape.queries_per_rep):
            latency = shape.latency_s * (1 + rng.uniform(-shape.jitter, shape.jitter))
            watts = shape.power_w * (1 + rng.uniform(-0.02, 0.02))
            t_start, clock["t"] = clock["t"], clock["t"] + latency
            e, net = energy(watts, latency)
            n = samples(latency)
            emit(
                "query",
                task=shape.task,
                rep=rep,
                index=index,
                t_start=t_start,
                t_end=clock["t"],
                latency_s=latency,
                ttft_s=latency / 4,
                prompt_tokens=24,
                output_tokens=shape.output_tokens,
                tokens_per_s=shape.output_tokens / latency,
                output_sha256=None,
                energy_j=e,
                net_energy_j=net,
                samples=n,
                fresh_samples=n,
                under_resolved=metered and n < 3,
                throttled=shape.throttled,
                temp_c=57.0,
            )
            batch_watts.append(watts)
            batch += 1
            if batch == shape.window_queries or index == shape.queries_per_rep - 1:
                window(
                    "queries",
                    batch_start,
                    clock["t"],
                    sum(batch_watts) / batch,
                    batch,
                    rep,
                    index // shape.window_queries,
                )
                batch_start, batch_watts, batch = clock["t"], [], 0
        emit(
            "power",
            watts=shape.power_w if metered else None,
            samples=samples(clock["t"] - shape.t0),
            fresh_samples=samples(clock["t"] - shape.t0),
        )
        if shape.perplexity is not None:
            emit("score", task=shape.task, metric="perplexity", value=shape.perplexity)
        for metric, value in shape.scores:
            emit("score", task=shape.task, metric=metric, value=value, rep=rep)
    if shape.warning:
        emit("warning", message="CPU governor is ondemand", code="governor")
    if shape.status == "failed":
        emit("error", message="model ran out of memory", error_type="ModelError")
    emit(
        "done",
        status=shape.status,
        queries=shape.reps * shape.queries_per_rep,
        duration_s=clock["t"] - shape.t0,
        **(
            {
                "peak_rss_bytes": shape.peak_rss_bytes,
                "peak_rss_scope": "job",
                "decode_s_per_token": shape.decode_s_per_token,
                "decode_queries": shape.reps * shape.queries_per_rep,
            }
            if shape.peak_rss_bytes is not None
            else {}
        ),
    )
    return out


def power_rows(
    n: int, *, t0: float = 1000.0, period_s: float = 0.01, watts: float = 5.0
) -> list[tuple[float, float, float, float, bool]]:
    """``n`` raw meter samples ``(t, watts, volts, amps, fresh)`` every ``period_s``."""
    return [
        (t0 + i * period_s, watts + (i % 7) * 0.01, 5.1, (watts + (i % 7) * 0.01) / 5.1, i % 5 != 0)
        for i in range(n)
    ]
