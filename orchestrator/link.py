"""The controller's link to one device's agent, re-established when the connection drops.

A :class:`DeviceLink` owns the device's transport: it connects, learns the device's work
directory and Python, runs agent commands (``PYTHON BUNDLE.pyz --workdir DIR ...``) and,
after a lost connection, reconnects with back-off for up to :data:`RECONNECT_WINDOW_S`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from orchestrator.deploy import agent_argv
from orchestrator.transport.base import CommandResult, Transport
from orchestrator.transport.errors import TransportError

#: how long a link keeps trying to reach a device that dropped mid-run
RECONNECT_WINDOW_S = 300.0
RECONNECT_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)


class DeviceLink:
    """One device's transport plus what the agent needs to be called on it.

    ``on_reconnecting(why)`` is told when a reconnect starts, ``log(line)`` when it
    succeeded; ``stop_event`` cuts the back-off waits short once the run is stopping.
    """

    def __init__(
        self,
        device: Any,
        open_transport: Callable[[Any], Transport],
        *,
        bundle_rel: str,
        stop_event: threading.Event,
        on_reconnecting: Callable[[str], None],
        log: Callable[[str], None],
    ) -> None:
        self.device = device
        self.bundle_rel = bundle_rel
        self._open_transport = open_transport
        self._stop_event = stop_event
        self._on_reconnecting = on_reconnecting
        self._log = log
        self.transport: Any = None
        self.workdir = ""
        self.python = ""

    def connect(self) -> None:
        """Open the transport and learn the device's work directory and Python."""
        self.transport = self._open_transport(self.device)
        self.workdir = self.transport.workdir()
        self.python = self.transport.python()

    def close(self) -> None:
        """Close the transport; never raises."""
        transport, self.transport = self.transport, None
        if transport is not None:
            try:
                transport.close()
            except Exception:
                pass

    def reconnect(self, why: str) -> None:
        """Reconnect after a lost connection, retrying for :data:`RECONNECT_WINDOW_S`."""
        name = self.device.name
        self._on_reconnecting(why)
        deadline = time.monotonic() + RECONNECT_WINDOW_S
        attempt = 0
        while True:
            self.close()
            try:
                self.connect()
                self._log(f"{name}: reconnected after: {why}")
                return
            except TransportError as exc:
                if time.monotonic() >= deadline:
                    raise TransportError(
                        f"{name}: could not reconnect within "
                        f"{RECONNECT_WINDOW_S:.0f} s: {exc.message}"
                    ) from exc
                delay = RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]
                attempt += 1
                if self._stop_event.wait(delay) and time.monotonic() >= deadline:
                    raise

    def remote(self, rel: str) -> str:
        """``rel`` joined with the device's work directory."""
        return f"{self.workdir.rstrip('/')}/{rel}"

    def run_agent(self, *args: str, timeout_s: float) -> CommandResult:
        """Run ``agent ARGS...`` on the device to completion (a non-zero exit is returned)."""
        argv = agent_argv(self.python, self.workdir, self.bundle_rel, *args)
        return self.transport.run(argv, check=False, timeout_s=timeout_s)

    def stream_agent(self, *args: str, idle_timeout_s: float | None) -> Iterator[str]:
        """The stdout lines of ``agent ARGS...`` as they arrive (see ``Transport.stream``)."""
        argv = agent_argv(self.python, self.workdir, self.bundle_rel, *args)
        return self.transport.stream(argv, idle_timeout_s=idle_timeout_s)
