"""Background sampling of a power meter into a ring buffer of monotonic-time samples.

The sampler knows nothing of models or queries: a daemon thread polls the meter at its
rate, the runner asks afterwards for the samples or the energy of any [t0, t1] window.
When the meter fails (unplugged, Bluetooth link lost, garbage on the line) the sampler
marks a gap, reports it once through ``on_event`` and keeps reconnecting with backoff;
callers never wait for the meter.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.energy import MIN_FRESH_SAMPLES, WindowEnergy, integrate
from agent.meters.base import Meter, Sample
from tasks.errors import TslmError

#: reconnect attempts back off from the first to the last delay (seconds)
BACKOFF_S = (0.2, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Gap:
    """An interval without meter data: from the last good sample to the next one."""

    start_t: float
    end_t: float | None
    reason: str


@dataclass(frozen=True)
class SamplerStats:
    """Counts since ``start()``; rates are per second of sampling."""

    total: int
    fresh: int
    gaps: int
    read_errors: int
    elapsed_s: float
    achieved_rate_hz: float
    fresh_rate_hz: float
    running: bool
    in_gap: bool


class _Ring:
    """Fixed-capacity ring of samples in time order, indexable oldest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: list[Sample] = []
        self._head = 0  # index of the oldest item once the ring is full

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        return self._items[(self._head + index) % len(self._items)]

    def append(self, sample: Sample) -> None:
        if len(self._items) < self.capacity:
            self._items.append(sample)
        else:
            self._items[self._head] = sample
            self._head = (self._head + 1) % self.capacity

    def slice(self, lo: int, hi: int) -> list[Sample]:
        return [self[i] for i in range(lo, hi)]


class Sampler:
    """Polls ``meter`` in a daemon thread; use as a context manager or start()/stop()."""

    def __init__(
        self,
        meter: Meter,
        *,
        period_s: float | None = None,
        capacity: int = 1_000_000,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.meter = meter
        configured = period_s if period_s is not None else meter.poll_period_s
        self.period_s = max(configured or 0.0, 0.0)
        self.on_event = on_event
        self._ring = _Ring(capacity)
        self._lock = threading.Lock()
        self._new_sample = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gaps: list[Gap] = []
        self._open_gap: tuple[float, str] | None = None
        self._total = 0
        self._fresh = 0
        self._errors = 0
        self._t_start: float | None = None
        self._t_stop: float | None = None
        self._connected = False
        self._last_good_t: float | None = None
        self._last_t = float("-inf")
        self._last_fresh_t = float("-inf")

    # ---- lifecycle -------------------------------------------------------------------

    def start(self, *, require_open: bool = True) -> Sampler:
        """Open the meter and start the polling thread.

        With ``require_open`` (the default) a meter that cannot be opened raises its
        MeterError here; otherwise the failure starts a gap and the thread keeps trying.
        """
        if self._thread is not None:
            return self
        self._t_start = time.monotonic()
        if self.meter.nominal_period_s is None:
            self.meter.open()  # "none": nothing to poll
            self._connected = True
            return self
        try:
            self.meter.open()
            self._connected = True
        except TslmError as exc:
            if require_open:
                raise
            self._begin_gap(time.monotonic(), exc)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"sampler-{self.meter.kind}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling and close the meter; safe to call more than once."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10.0)
        if self._t_stop is None and self._t_start is not None:
            self._t_stop = time.monotonic()
        try:
            self.meter.close()
        except Exception:  # closing a vanished device must not fail the caller
            pass
        self._connected = False

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- queries (any thread) --------------------------------------------------------

    def samples(self, t0: float = float("-inf"), t1: float = float("inf")) -> list[Sample]:
        """Buffered samples with t0 <= t <= t1, oldest first."""
        with self._lock:
            lo = bisect.bisect_left(self._ring, t0, key=lambda s: s.t)
            hi = bisect.bisect_right(self._ring, t1, key=lambda s: s.t)
            return self._ring.slice(lo, hi)

    def gaps(self) -> list[Gap]:
        """Gaps so far; an open one has ``end_t`` None."""
        with self._lock:
            gaps = list(self._gaps)
            if self._open_gap is not None:
                gaps.append(Gap(self._open_gap[0], None, self._open_gap[1]))
            return gaps

    def window(
        self, t0: float, t1: float, *, min_fresh_samples: int = MIN_FRESH_SAMPLES
    ) -> WindowEnergy:
        """Energy over [t0, t1], using the nearest samples outside it for the edges."""
        with self._lock:
            n = len(self._ring)
            lo = bisect.bisect_left(self._ring, t0, key=lambda s: s.t)
            hi = bisect.bisect_right(self._ring, t1, key=lambda s: s.t)
            # widen to the nearest fresh sample on each side
            while lo > 0:
                lo -= 1
                if self._ring[lo].fresh and self._ring[lo].watts is not None:
                    break
            while hi < n:
                hi += 1
                if self._ring[hi - 1].fresh and self._ring[hi - 1].watts is not None:
                    break
            chunk = self._ring.slice(lo, hi)
        gaps = [(g.start_t, g.end_t) for g in self.gaps()]
        return integrate(chunk, t0, t1, gaps=gaps, min_fresh_samples=min_fresh_samples)

    def latest(self) -> Sample | None:
        """The newest sample, or None."""
        with self._lock:
            return self._ring[len(self._ring) - 1] if len(self._ring) else None

    def wait_for(self, t: float, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a fresh sample newer than ``t`` (for window edges)."""
        deadline = time.monotonic() + timeout_s
        with self._new_sample:
            while True:
                if self._last_fresh_t > t:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None:
                    return False
                self._new_sample.wait(remaining)

    @property
    def native_thread_id(self) -> int | None:
        """OS id of the polling thread while it runs (for CPU accounting)."""
        thread = self._thread
        return thread.native_id if thread is not None else None

    def stats(self) -> SamplerStats:
        """Sample counts, gaps and achieved rates."""
        with self._lock:
            end = self._t_stop if self._t_stop is not None else time.monotonic()
            elapsed = end - self._t_start if self._t_start is not None else 0.0
            rate = self._total / elapsed if elapsed > 0 else 0.0
            fresh_rate = self._fresh / elapsed if elapsed > 0 else 0.0
            return SamplerStats(
                total=self._total,
                fresh=self._fresh,
                gaps=len(self._gaps) + (self._open_gap is not None),
                read_errors=self._errors,
                elapsed_s=elapsed,
                achieved_rate_hz=rate,
                fresh_rate_hz=fresh_rate,
                running=self._thread is not None,
                in_gap=self._open_gap is not None,
            )

    # ---- the polling thread ----------------------------------------------------------

    def _run(self) -> None:
        backoff = 0
        next_due = time.monotonic()
        while not self._stop.is_set():
            if not self._connected:
                try:
                    self.meter.open()
                    self._connected = True
                    backoff = 0
                except Exception as exc:  # any driver failure becomes a gap
                    self._note_failure(exc)
                    self._stop.wait(BACKOFF_S[min(backoff, len(BACKOFF_S) - 1)])
                    backoff += 1
                    continue
            try:
                new = self.meter.read()
            except Exception as exc:  # any driver failure becomes a gap
                self._note_failure(exc)
                try:
                    self.meter.close()
                except Exception:
                    pass
                self._connected = False
                self._stop.wait(BACKOFF_S[0])
                continue
            if new:
                self._store(new)
            next_due = max(next_due + self.period_s, time.monotonic())
            delay = next_due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def _store(self, new: list[Sample]) -> None:
        with self._new_sample:
            for sample in new:
                if sample.t < self._last_t:
                    continue  # never let the buffer go out of time order
                self._last_t = sample.t
                self._ring.append(sample)
                self._total += 1
                if sample.fresh:
                    self._fresh += 1
                    self._last_fresh_t = sample.t
            if self._open_gap is not None:
                start, reason = self._open_gap
                self._gaps.append(Gap(start, new[0].t, reason))
                self._open_gap = None
            self._last_good_t = new[-1].t
            self._new_sample.notify_all()

    def _note_failure(self, exc: BaseException) -> None:
        with self._lock:
            self._errors += 1
        self._begin_gap(time.monotonic(), exc)

    def _begin_gap(self, now: float, exc: BaseException) -> None:
        if isinstance(exc, TslmError):
            message = exc.message
        else:  # a driver let a raw exception through: still say which meter failed
            message = f"{self.meter.description}: {type(exc).__name__}: {exc}"
        with self._lock:
            if self._open_gap is not None:
                return
            start = self._last_good_t if self._last_good_t is not None else now
            self._open_gap = (start, message)
        if self.on_event is not None:
            try:
                self.on_event("warning", f"power meter gap: {message}; reconnecting")
            except Exception:  # a broken listener must not stop the sampling
                pass
