"""Live state of a run, fed by the per-device workers and read by the dashboard.

The scheduler's device threads call :meth:`RunProgress.set_state` and
:meth:`RunProgress.apply_event`; the dashboard (rich Live or plain log lines) reads a
consistent :meth:`RunProgress.snapshot` under the same lock. Nothing here talks to the
network or the database.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

#: device states in the order a trial goes through them
DEVICE_STATES = (
    "pending",
    "waiting",
    "connecting",
    "deploying",
    "starting",
    "loading",
    "warmup",
    "settling",
    "idle baseline",
    "running",
    "reconnecting",
    "done",
    "failed",
    "interrupted",
    "skipped",
)
TERMINAL_STATES = frozenset({"done", "failed", "interrupted", "skipped"})
#: states of a device that is measuring (its model loaded, or its queries running)
MEASURING_STATES = frozenset({"loading", "warmup", "settling", "idle baseline", "running"})
POWER_HISTORY = 40


@dataclass
class DeviceProgress:
    """What the dashboard shows for one device."""

    name: str
    state: str = "pending"
    trial: str | None = None
    trials_done: int = 0
    trials_total: int = 0
    queries_done: int = 0
    queries_total: int = 0
    power_w: float | None = None
    power_history_w: deque = field(default_factory=lambda: deque(maxlen=POWER_HISTORY))
    last_latency_s: float | None = None
    energy_j_per_query: float | None = None
    temp_c: float | None = None
    throttled: bool = False
    last_message: str | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: when the device first reached a measuring state (None: not yet)
    measuring_at: float | None = None


#: event phase name -> device state shown
_PHASE_STATE = {
    "loading": "loading",
    "warmup": "warmup",
    "ranging": "meter lag",
    "ranged": "meter lag",
    "settling": "settling",
    "settled": "settling",
    "idle": "idle baseline",
    "idle_after": "idle baseline",
    "running": "running",
    "stopping": "running",
}


def _settling_message(event: Any) -> str | None:
    """What the dashboard says about the stable-start wait (None for other phases)."""
    phase = event.get("phase")
    if phase == "settling":
        return (
            f"waiting up to {event.get('max_wait_s', 0):g} s for stable idle power and temperature"
        )
    if phase == "settled":
        outcome = {True: "stable", False: "NOT stable", None: "nothing to observe"}
        return f"{outcome.get(event.get('stable'), '?')} after {event.get('waited_s', 0):g} s"
    return None


class RunProgress:
    """Thread-safe progress of one run across its devices."""

    def __init__(
        self,
        run_id: str,
        devices: list[str],
        *,
        listener: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.run_id = run_id
        self.started_monotonic = time.monotonic()
        self._lock = threading.Lock()
        self._devices = {name: DeviceProgress(name=name) for name in devices}
        self._trial_estimate: dict[str, int] = {}
        #: each called as listener(device, kind, text) for state changes, warnings and
        #: errors, outside the lock, from the thread that made the change
        self._listeners: list[Callable[[str, str, str], None]] = []
        if listener is not None:
            self._listeners.append(listener)

    # ---- listeners (dashboard, log lines)
    def add_listener(self, listener: Callable[[str, str, str], None]) -> None:
        """Call ``listener(device, kind, text)`` on every state change, warning and error.

        ``kind`` is ``"state"``, ``"warning"`` or ``"error"``.
        """
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str, str, str], None]) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify(self, device: str, kind: str, text: str) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(device, kind, text)

    # ---- writers (device threads)
    def plan(self, device: str, *, trials_total: int, queries_total: int) -> None:
        with self._lock:
            d = self._devices[device]
            d.trials_total, d.queries_total = trials_total, queries_total

    def set_state(
        self, device: str, state: str, *, trial: str | None = None, message: str | None = None
    ) -> None:
        if state not in DEVICE_STATES:
            raise ValueError(f"unknown device state {state!r}")
        with self._lock:
            d = self._devices[device]
            changed = d.state != state or (trial is not None and trial != d.trial)
            d.state = state
            if trial is not None:
                d.trial = trial
            if d.started_at is None and state not in ("pending",):
                d.started_at = time.monotonic()
            if state in MEASURING_STATES and d.measuring_at is None:
                d.measuring_at = time.monotonic()
            if state in TERMINAL_STATES:
                d.finished_at = time.monotonic()
            if state == "failed" and message:
                d.error = message
            if message:
                d.last_message = message
        if changed:
            label = f"{state} {trial}" if trial else state
            self._notify(device, "state", label + (f": {message}" if message else ""))

    def trial_finished(self, device: str) -> None:
        with self._lock:
            self._devices[device].trials_done += 1

    def apply_event(self, device: str, event: Any) -> None:
        """Update the view from one agent event (an ``agent.protocol.Event``)."""
        note: tuple[str, str] | None = None
        with self._lock:
            d = self._devices[device]
            kind = event.type
            if kind == "phase":
                self._correct_total(d, event)
                state = _PHASE_STATE.get(event.get("phase"), d.state)
                wait = _settling_message(event)
                if wait is not None:
                    d.last_message = wait
                if state in MEASURING_STATES and d.measuring_at is None:
                    d.measuring_at = time.monotonic()  # the agent's phases say when it began
                if state != d.state:
                    d.state = state
                    note = ("state", f"{state} {d.trial}" if d.trial else state)
            elif kind == "power":
                watts = event.get("watts")
                d.power_w = watts
                if watts is not None:
                    d.power_history_w.append(watts)
            elif kind == "query":
                d.queries_done += 1
                d.last_latency_s = event.get("latency_s")
                if event.get("temp_c") is not None:
                    d.temp_c = event.get("temp_c")
                d.throttled = d.throttled or bool(event.get("throttled"))
            elif kind == "window" and event.get("kind") == "queries":
                if event.get("energy_j_per_query") is not None:
                    d.energy_j_per_query = event.get("energy_j_per_query")
                if event.get("temp_c_after") is not None:
                    d.temp_c = event.get("temp_c_after")
                d.throttled = d.throttled or bool(event.get("throttled"))
            elif kind in ("warning", "error"):
                d.last_message = event.get("message")
                note = (kind, event.get("message", ""))
        if note:
            self._notify(device, note[0], note[1])

    def start_trial(self, device: str, label: str, *, estimated_queries: int) -> None:
        """A trial begins: its query count is estimated until the agent reports it."""
        with self._lock:
            self._trial_estimate[device] = estimated_queries
        self.set_state(device, "starting", trial=label)

    def _correct_total(self, d: DeviceProgress, event: Any) -> None:
        # the agent's first `running` phase of a trial says how many queries it runs
        queries, reps = event.get("queries"), event.get("repetitions")
        if event.get("phase") != "running" or not isinstance(queries, int):
            return
        actual = queries * (reps if isinstance(reps, int) else 1)
        estimate = self._trial_estimate.get(d.name)
        if estimate is not None and estimate != actual:
            d.queries_total = max(d.queries_done, d.queries_total + actual - estimate)
        self._trial_estimate[d.name] = actual

    # ---- readers (dashboard)
    def snapshot(self) -> list[DeviceProgress]:
        """Copies of every device's progress, in inventory order."""
        with self._lock:
            return [
                replace(d, power_history_w=deque(d.power_history_w, maxlen=POWER_HISTORY))
                for d in self._devices.values()
            ]

    def behind(self, after_s: float) -> list[tuple[str, str, float]]:
        """Devices that have not begun measuring ``after_s`` seconds or more after the
        first device did: (name, state, seconds since the first began), in order."""
        now = time.monotonic()
        with self._lock:
            starts = [d.measuring_at for d in self._devices.values() if d.measuring_at]
            if not starts or now - min(starts) < after_s:
                return []
            waited = now - min(starts)
            return [
                (d.name, d.state, waited)
                for d in self._devices.values()
                if d.measuring_at is None and d.state not in TERMINAL_STATES
            ]

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_monotonic

    def eta_s(self) -> float | None:
        """Remaining time estimated from the query rate so far (None until measurable)."""
        snap = self.snapshot()
        done = sum(d.queries_done for d in snap)
        total = sum(d.queries_total for d in snap)
        elapsed = self.elapsed_s()
        if done == 0 or total == 0 or elapsed <= 0:
            return None
        return max(0.0, elapsed * (total - done) / done)
