"""Energy windows: queries grouped into windows, their energies and their events.

The sampler polls the meter in its own thread and knows nothing of queries; energies are
integrated afterwards over each query's and each window's [t_start, t_end] on the same
monotonic clock. A query window closes once it holds ``min_fresh_samples`` fresh samples
and lasts ``min_seconds`` (this is how a 2 Hz meter measures 300 ms queries); the last
window of a repetition may be short and is then flagged under-resolved. The events of a
closed window are written once the sampler has a reading past its end (or after a short
grace period), so the edge of the window is interpolated, not extrapolated, while the
next window's queries already run.

With the ``none`` meter every energy field is null and ``under_resolved`` is False
(nothing to resolve).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent import phases, sysinfo
from agent.journal import EventEmitter
from agent.protocol import JobSpec

#: how long a closed window waits for the meter's first reading past its end
MIN_CATCH_UP_S = 0.5


@dataclass
class _Window:
    """A group of back-to-back queries of one task repetition."""

    task: str
    rep: int
    index: int
    before: sysinfo.ThermalState
    queries: list[tuple[Any, float | None]] = field(default_factory=list)
    after: sysinfo.ThermalState | None = None
    last_of_rep: bool = False

    @property
    def t_start(self) -> float:
        return self.queries[0][0].t_start

    @property
    def t_end(self) -> float:
        return self.queries[-1][0].t_end


class WindowRecorder:
    """Groups a job's queries into windows and writes ``query`` and ``window`` events.

    The runner sets ``meter`` once it is created and ``sampler`` once it runs, and
    ``idle_power_w`` once the idle baseline is measured (net energies need it).
    """

    def __init__(self, spec: JobSpec, emitter: EventEmitter, sys_root: Path) -> None:
        self.spec = spec
        self.emitter = emitter
        self.sys_root = sys_root
        self.meter: Any = None
        self.sampler: Any = None
        self.idle_power_w: float | None = None
        #: the meter's lag (seconds; 0 until ranging finds one): windows are integrated
        #: over [t0 + lag, t1 + lag] of the meter's readings
        self.lag_s = 0.0
        #: why the lag ranging failed (None when it succeeded or did not run): every
        #: energy after it is flagged under-resolved
        self.lag_problem: str | None = None
        self._window_index = 0
        self._pending: list[_Window] = []
        self._open: _Window | None = None
        self._last_thermal: sysinfo.ThermalState | None = None
        self._stale_reported = False

    @property
    def measures(self) -> bool:
        """Whether the meter measures energy (not the ``none`` meter)."""
        return self.meter is not None and self.meter.nominal_period_s is not None

    @property
    def pending(self) -> bool:
        """Whether closed windows still wait for their events to be written."""
        return bool(self._pending)

    # ------------------------------------------------------------------ query windows

    def start_repetition(self) -> None:
        """Forget the last window's thermal state: a repetition's first window reads its own."""
        self._last_thermal = None

    def open(self, task: str, rep: int) -> None:
        """Open a window for the next query unless one is open already."""
        if self._open is None:
            self._open = _Window(
                task, rep, self._next_window_index(), self._last_thermal or self._thermal()
            )

    def add(self, result: Any) -> None:
        """Add a query's result (and the CPU temperature now) to the open window."""
        self._open.queries.append((result, sysinfo.cpu_temp_c(self.sys_root)))

    def close_if_full(self) -> None:
        """Close the open window once it holds enough samples and lasts long enough."""
        if self._window_full(self._open):
            self.close()

    def _next_window_index(self) -> int:
        self._window_index += 1
        return self._window_index - 1

    def _window_full(self, window: _Window) -> bool:
        policy = self.spec.window
        duration = window.t_end - window.t_start
        if duration < policy.min_seconds:
            return False
        if not self.measures:  # latency only: one window per repetition unless timed
            return policy.min_seconds > 0
        return self._energy(window.t_start, window.t_end).fresh_samples >= policy.min_fresh_samples

    def close(self, last_of_rep: bool = False) -> None:
        """Close the open window (if it holds queries) and queue its events."""
        window, self._open = self._open, None
        if window is None or not window.queries:
            return
        window.after = self._last_thermal = self._thermal()
        window.last_of_rep = last_of_rep
        self._pending.append(window)

    def _catch_up_s(self) -> float:
        period = self.meter.nominal_period_s if self.measures else None
        return max(MIN_CATCH_UP_S, 2.5 * (period or 0.0))

    def _has_reading_after(self, t: float) -> bool:
        return not self.measures or self.sampler.wait_for(t + self.lag_s, 0.0)

    def wait_for_reading_after(self, t: float) -> None:
        """Wait (a short grace period at most) for the meter's first reading past ``t``
        (plus the meter's lag)."""
        if self.measures:
            t = t + self.lag_s
            self.sampler.wait_for(t, max(0.0, t + self._catch_up_s() - time.monotonic()))

    def flush(self, force: bool) -> None:
        """Write the events of closed windows whose end the meter has caught up with."""
        while self._pending:
            window = self._pending[0]
            if force:
                self.wait_for_reading_after(window.t_end)
            elif not (
                self._has_reading_after(window.t_end)
                or time.monotonic() > window.t_end + self.lag_s + self._catch_up_s()
            ):
                return
            self._pending.pop(0)
            self._report_stale_meter(window)
            self._emit_query_window(window)

    def _report_stale_meter(self, window: _Window) -> None:
        """Warn once when the meter has nothing past a window's end (until it reads again).

        The driver only fails after its own read timeout; a meter that falls silent near
        the end of a trial would otherwise leave nothing but under-resolved windows.
        """
        if not self.measures:
            return
        if self._has_reading_after(window.t_end):
            self._stale_reported = False
            return
        if self._stale_reported:
            return
        self._stale_reported = True
        latest = self.sampler.latest()
        if latest is None:
            silent = "no reading at all"
        elif latest.t < window.t_end:
            silent = f"last reading {window.t_end - latest.t:.1f} s before it"
        else:
            silent = "no fresh reading"
        self.emitter.emit(
            "warning",
            code="meter_stale",
            message=(
                f"job {self.spec.job_id}: power meter {self.meter.description} gave no reading "
                f"within {self._catch_up_s():.1f} s after window {window.index} ended "
                f"({silent}); its energy is incomplete and flagged"
            ),
        )

    def _emit_query_window(self, window: _Window) -> None:
        throttled = sysinfo.any_throttled(window.before, window.after)
        for result, temp_c in window.queries:
            energy = self._energy(result.t_start, result.t_end)
            self.emitter.emit(
                "query",
                task=window.task,
                rep=window.rep,
                index=result.index,
                t_start=result.t_start,
                t_end=result.t_end,
                latency_s=result.latency_s,
                ttft_s=result.ttft_s,
                prompt_tokens=result.prompt_tokens,
                output_tokens=result.output_tokens,
                tokens_per_s=result.tokens_per_s,
                output_sha256=result.output_sha256,
                throttled=throttled,
                temp_c=temp_c,
                window_index=window.index,
                extra=dict(result.extra),
                **self._energy_fields(energy, result.latency_s),
                **phases.query_fields(result, self._energy),
            )
        self.emit_window(
            "queries",
            window.task,
            window.rep,
            window.t_start,
            window.t_end,
            len(window.queries),
            window.before,
            window.after,
            window.index,
            query_first=window.queries[0][0].index,
            query_last=window.queries[-1][0].index,
            last_of_rep=window.last_of_rep,
            **phases.window_fields(self._phases(window)),
        )

    def _phases(self, window: _Window) -> dict[str, phases.PhaseEnergy] | None:
        """Prefill and decode energy over the window's queries (None without a meter)."""
        if not self.measures:
            return None
        results = [result for result, _ in window.queries]
        measured = phases.measure(results, self._energy, self.spec.window.min_fresh_samples)
        if measured is not None and self.lag_problem is not None:
            # unshifted energies are not trusted (as for the window's own energy)
            measured = {p: replace(e, under_resolved=True) for p, e in measured.items()}
        return measured

    # ------------------------------------------------------------------ energies

    def _energy(self, t0: float, t1: float) -> Any:
        if not self.measures:
            return None
        return self.sampler.window(
            t0 + self.lag_s, t1 + self.lag_s, min_fresh_samples=self.spec.window.min_fresh_samples
        )

    def _energy_fields(self, energy: Any, duration_s: float) -> dict[str, Any]:
        if energy is None:
            return {
                "energy_j": None,
                "net_energy_j": None,
                "samples": 0,
                "fresh_samples": 0,
                "under_resolved": False,
                "gap": False,
                "extrapolated_s": None,
            }
        net = None
        if energy.energy_j is not None and self.idle_power_w is not None:
            net = energy.energy_j - self.idle_power_w * duration_s
        return {
            "energy_j": energy.energy_j,
            "net_energy_j": net,
            "samples": energy.samples,
            "fresh_samples": energy.fresh_samples,
            "under_resolved": energy.under_resolved or self.lag_problem is not None,
            "gap": energy.gap,
            "extrapolated_s": energy.extrapolated_s,
            "meter_lag_s": self.lag_s,
        }

    def emit_window(
        self,
        kind: str,
        task: str | None,
        rep: int | None,
        t0: float,
        t1: float,
        queries: int,
        before: sysinfo.ThermalState,
        after: sysinfo.ThermalState | None,
        index: int | None = None,
        **extra: Any,
    ) -> Any:
        """Integrate the energy over [t0, t1] and write a ``window`` event; returns it."""
        energy = self._energy(t0, t1)
        fields = self._energy_fields(energy, t1 - t0)
        per_query = {"energy_j_per_query": None, "net_energy_j_per_query": None}
        if queries:
            per_query = {
                "energy_j_per_query": None
                if fields["energy_j"] is None
                else fields["energy_j"] / queries,
                "net_energy_j_per_query": None
                if fields["net_energy_j"] is None
                else fields["net_energy_j"] / queries,
            }
        after = after or before
        self.emitter.emit(
            "window",
            kind=kind,
            task=task,
            rep=rep,
            index=self._next_window_index() if index is None else index,
            t_start=t0,
            t_end=t1,
            duration_s=t1 - t0,
            queries=queries,
            mean_power_w=None if energy is None else energy.mean_power_w,
            median_power_w=None if energy is None else energy.median_power_w,
            throttled=sysinfo.any_throttled(before, after),
            temp_c_before=before.temp_c,
            temp_c_after=after.temp_c,
            freq_mhz_before=before.freq_mhz,
            freq_mhz_after=after.freq_mhz,
            throttled_flags_before=before.throttled_flags,
            throttled_flags_after=after.throttled_flags,
            **fields,
            **per_query,
            **extra,
        )
        self.emitter.sync()
        return energy

    def _thermal(self) -> sysinfo.ThermalState:
        return sysinfo.thermal_state(self.sys_root)
