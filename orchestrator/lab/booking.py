"""A device's labgrid place, held for its whole part of a run.

Before the device is contacted its place is acquired (:meth:`PlaceBooking.acquire`): a
place held by someone else makes the device wait, up to ``--place-wait`` seconds, then
skip; a place this run still holds from before a controller crash (an open row of
``place_holds``) is reused. While the device runs, a watcher looks at the place: taken
by someone else, the device is stopped and its trial marked lost. When the device's part
ends (done, failed, Ctrl-C), the place is released (:meth:`PlaceBooking.release`).

Every step is a :class:`LabEvent`, logged and kept in order on :class:`LabBookings`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.lab.client import LabClient, coordinator_address
from orchestrator.lab.errors import LabError, PlaceBusyError

#: how often a waiting device looks at its place again
POLL_S = 0.5
#: how often a running device's place is checked for a lost reservation
WATCH_S = 1.0
#: how long a lost place is watched to name who took it
TAKER_WAIT_S = 3.0
#: default of ``--place-wait``: how long a device waits for a place held by someone else
DEFAULT_PLACE_WAIT_S = 600.0


@dataclass(frozen=True)
class LabEvent:
    """One step of a device's place: acquired, reused, waiting, skipped, lost, released,
    gone (not ours any more at release)."""

    device: str
    place: str
    kind: str
    detail: str = ""

    def text(self) -> str:
        return f"{self.device}: place {self.place} {self.kind}" + (
            f" ({self.detail})" if self.detail else ""
        )


class LabBookings:
    """The coordinators of a run (one session each, connected at start) and the events
    of every device's place."""

    def __init__(self, devices: list[Any], log: Callable[[str], None]) -> None:
        self.log = log
        self.events: list[LabEvent] = []
        self._lock = threading.Lock()
        self._clients: dict[str, LabClient] = {}
        try:
            for device in devices:
                if device.lab_place:
                    client = self._client(coordinator_address(device.lab_coordinator))
                    client.holder(device.lab_place)  # an unknown place is an error at start
        except BaseException:
            self.close()
            raise

    def _client(self, address: str) -> LabClient:
        if address not in self._clients:
            self._clients[address] = LabClient(address)
        return self._clients[address]

    def client_for(self, device: Any) -> LabClient:
        return self._clients[coordinator_address(device.lab_coordinator)]

    def record(self, event: LabEvent) -> None:
        with self._lock:
            self.events.append(event)
        self.log(f"lab: {event.text()}")

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


class PlaceBooking:
    """The place of one device for one run: acquire, watch, release."""

    def __init__(
        self,
        bookings: LabBookings,
        device: Any,
        *,
        run_id: str,
        store: Any,
        store_lock: threading.Lock,
        wait_s: float,
        set_state: Callable[[str, str], None],
    ) -> None:
        self.bookings = bookings
        self.client = bookings.client_for(device)
        self.device = device
        self.place: str = device.lab_place
        self.run_id = run_id
        self.store = store
        self.store_lock = store_lock
        self.wait_s = wait_s
        self.set_state = set_state
        #: who took the place while the device ran (None: nobody)
        self.lost_to: str | None = None
        self._held = False
        self._done = threading.Event()
        self._watcher: threading.Thread | None = None

    def _event(self, kind: str, detail: str = "") -> None:
        self.bookings.record(LabEvent(self.device.name, self.place, kind, detail))

    def _ours_from_before(self) -> bool:
        """Whether this run recorded the place as held and never let it go (a resume)."""
        with self.store_lock:
            holds = self.store.holds(self.run_id)
        return any(h.device == self.device.name and h.open for h in holds)

    # ------------------------------------------------------------------ acquire
    def acquire(self, stop: threading.Event) -> str | None:
        """Hold the place; None when held, else why the device is skipped."""
        me = self.client.identity
        deadline = time.monotonic() + self.wait_s
        waiting_for: str | None = None
        while True:
            holder = self.client.holder(self.place, sync=True)
            if holder == me and self._ours_from_before():
                self._held = True
                self._event("reused", f"held by {me} since before the resume")
                return None
            if holder is None:
                try:
                    self.client.acquire(self.place)
                except PlaceBusyError as exc:
                    holder = exc.holder
                else:
                    self._opened()
                    return None
            if waiting_for != holder:
                waiting_for = holder
                self._event("waiting", f"held by {holder}, waiting up to {self.wait_s:g} s")
                if holder == me:
                    self.bookings.log(
                        f"lab: {self.device.name}: place {self.place} is held by you, not by "
                        "this run (another run or terminal; `tslm-fleet lab release RUN_ID` "
                        "frees the places of a run that crashed)"
                    )
                self.set_state("waiting", f"place {self.place} held by {holder}")
            if time.monotonic() >= deadline:
                why = f"place {self.place} is held by {holder}" + (
                    f" (waited {self.wait_s:g} s, see --place-wait)"
                    if self.wait_s
                    else " (--place-wait 0)"
                )
                self._event("skipped", f"held by {holder}")
                return why
            if stop.wait(min(POLL_S, max(0.0, deadline - time.monotonic()) or POLL_S)):
                return f"run interrupted while waiting for place {self.place}"

    def _opened(self) -> None:
        self._held = True
        with self.store_lock:
            self.store.open_hold(
                run_id=self.run_id,
                device=self.device.name,
                place=self.place,
                coordinator=self.client.address,
                holder=self.client.identity,
            )
        self._event("acquired", f"by {self.client.identity}")

    # ------------------------------------------------------------------ watch
    def watch(self, run_stop: threading.Event, device_stop: threading.Event) -> None:
        """Stop the device (``device_stop``) when the run stops or the place is taken."""

        def loop() -> None:
            unreachable = False
            while not self._done.is_set():
                if run_stop.is_set():
                    device_stop.set()
                try:
                    holder = self.client.holder(self.place, sync=True)
                    unreachable = False
                except LabError as exc:
                    if not unreachable:  # once per outage; the device goes on meanwhile
                        self.bookings.log(f"lab: {self.device.name}: cannot look at place: {exc}")
                    unreachable = True
                    holder = self.client.identity
                if holder != self.client.identity:
                    self.lost_to = holder or self._taker() or "nobody (released by someone else)"
                    self._event("lost", f"taken by {self.lost_to}")
                    device_stop.set()
                    return
                self._done.wait(WATCH_S if not run_stop.is_set() else POLL_S)

        self._watcher = threading.Thread(target=loop, name=f"place-{self.device.name}", daemon=True)
        self._watcher.start()

    def _taker(self) -> str | None:
        """Who takes the place just after it was released from under us (forcing a place
        is a release, then an acquire): looked for during :data:`TAKER_WAIT_S`."""
        deadline = time.monotonic() + TAKER_WAIT_S
        while time.monotonic() < deadline:
            try:
                holder = self.client.holder(self.place, sync=True)
            except LabError:
                return None
            if holder is not None:
                return holder
            time.sleep(POLL_S / 2)
        return None

    # ------------------------------------------------------------------ release
    def release(self) -> None:
        """Let the place go (idempotent); never raises."""
        self._done.set()
        if self._watcher is not None:
            self._watcher.join(10)
        if not self._held:
            return
        self._held = False
        outcome = "lost"
        if self.lost_to is None:
            try:
                outcome = "released" if self.client.release(self.place) else "gone"
            except LabError as exc:
                self.bookings.log(f"lab: {self.device.name}: {exc}")
                return  # the hold stays open: `tslm-fleet lab release` finds it
            self._event(outcome)
        with self.store_lock:
            self.store.close_hold(run_id=self.run_id, device=self.device.name, outcome=outcome)
