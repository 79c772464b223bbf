"""A degraded network link for the fleet tests: ``tc netem`` when the kernel has it,
else a TCP relay that does to the byte stream what delay and loss do to TCP.

With netem the packets themselves are delayed and dropped on the device's veth pair.
Kernels built without ``sch_netem`` (common in containers and CI sandboxes) get
:class:`ShapedRelay` instead: a relay on a loopback address in front of the device's sshd
that holds every chunk for ``delay_s`` in each direction and, with probability ``loss``,
an extra retransmission timeout, in order (head-of-line blocking, as TCP does after a lost
segment). The application sees what it would see on the lossy link: late, stalled,
never reordered or missing bytes.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

#: extra wait of a "lost" chunk: Linux's minimum RTO plus one round trip of the link
RETRANSMIT_S = 0.2


def netem_available() -> bool:
    """Whether ``tc qdisc ... netem`` works on this kernel (checked on a throwaway dummy)."""
    name = "tslmnetemchk"
    if (
        subprocess.run(
            ["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
            capture_output=True,
            check=False,
        ).returncode
        != 0
    ):
        return False
    try:
        return (
            subprocess.run(
                ["tc", "qdisc", "add", "dev", name, "root", "netem", "delay", "1ms"],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


@dataclass
class ShapedRelay:
    """Listen on ``listen`` (address, port) and relay to ``target`` through a slow, lossy link."""

    target: tuple[str, int]
    delay_s: float = 0.3
    loss: float = 0.05
    seed: int = 0
    listen_address: str = "127.0.0.99"
    chunks: int = 0
    stalled_chunks: int = 0
    _sock: socket.socket | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)
    _conns: list[socket.socket] = field(default_factory=list, repr=False)

    def start(self) -> ShapedRelay:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._sock = socket.create_server((self.listen_address, 0))
        self._sock.settimeout(0.2)
        self._spawn(self._accept_loop)
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None, "relay not started"
        return self._sock.getsockname()[:2]

    def close(self) -> None:
        self._stop.set()
        for sock in [self._sock, *self._conns]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._conns += [client, upstream]
            self._spawn(self._pipe, client, upstream)
            self._spawn(self._pipe, upstream, client)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        """Relay one direction: every chunk leaves ``delay_s`` (+ a stall when lost) later."""
        queue: list[tuple[float, int, bytes]] = []
        cond = threading.Condition()
        order = 0
        last_due = 0.0
        done = threading.Event()

        def sender() -> None:
            while True:
                with cond:
                    while not queue and not done.is_set():
                        cond.wait(0.1)
                    if not queue:
                        break
                    due, _, data = queue[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        cond.wait(wait)
                        continue
                    heapq.heappop(queue)
                try:
                    dst.sendall(data)
                except OSError:
                    break
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        self._spawn(sender)
        src.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            with self._lock:
                self.chunks += 1
                lost = self._rng.random() < self.loss
                self.stalled_chunks += lost
            due = max(
                time.monotonic() + self.delay_s + (RETRANSMIT_S if lost else 0.0), last_due
            )  # never overtakes an earlier chunk
            last_due = due
            with cond:
                heapq.heappush(queue, (due, order, data))
                order += 1
                cond.notify()
        done.set()
