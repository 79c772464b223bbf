"""FNIRSI FNB48 / FNB58 / C1 emulator behind a fake pair of USB interrupt endpoints.

``FakeFnirsi(...).endpoints`` is what pyusb would give the driver: an OUT endpoint with
``write(data, timeout_ms)`` and an IN endpoint with ``read(size, timeout_ms)``, raising
``usb.core.USBTimeoutError`` / ``usb.core.USBError`` as pyusb does. The device checks
the request CRCs and the start-up sequence, then streams 64-byte data packets (four
samples, one packet every 40 ms, with a little ADC noise) while it gets keep-alives. Faults: ``bad_crc``,
``one_in_four`` (only the first sample of a packet is new), ``stall`` (no packets), and
``unplug()`` / ``replug()``.
"""

from __future__ import annotations

import errno
import random
import threading
import time

import usb.core

from agent.meters.emulate.traces import PowerTrace

PACKET_LEN = 64
PACKET_PERIOD_S = 0.04
SAMPLE_PERIOD_S = 0.01
MAX_BACKLOG = 8
FAULTS = ("bad_crc", "one_in_four", "stall")


def crc8(data: bytes) -> int:
    """CRC-8, polynomial 0x39, initial value 0x42, no reflection, no final xor."""
    crc = 0x42
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x39) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def encode_sample(
    volts: float, amps: float, dplus_v: float = 0.6, dminus_v: float = 0.61, temp_c: float = 28.4
) -> bytes:
    """One 15-byte little-endian sample."""
    return (
        round(volts * 1e5).to_bytes(4, "little")
        + round(amps * 1e5).to_bytes(4, "little")
        + round(dplus_v * 1000).to_bytes(2, "little")
        + round(dminus_v * 1000).to_bytes(2, "little")
        + b"\x01"
        + round(temp_c * 10).to_bytes(2, "little")
    )


def data_packet(samples: list[bytes]) -> bytes:
    """A 64-byte data packet (type 0x04) of four encoded samples, with its CRC."""
    assert len(samples) == 4
    body = bytes([0xAA, 0x04]) + b"".join(samples)
    body += bytes(PACKET_LEN - 1 - len(body))
    return body + bytes([crc8(body[1:63])])


class _OutEndpoint:
    def __init__(self, device: FakeFnirsi) -> None:
        self._device = device

    def write(self, data: bytes, timeout: int | None = None) -> int:
        return self._device.handle_request(bytes(data))


class _InEndpoint:
    def __init__(self, device: FakeFnirsi) -> None:
        self._device = device

    def read(self, size: int, timeout: int | None = None) -> bytes:
        return self._device.next_packet(size, (timeout or 1000) / 1000)


class FakeFnirsi:
    """A tester of ``model`` ("fnb48", "fnb58", "c1") measuring ``trace``."""

    def __init__(
        self,
        model: str,
        trace: PowerTrace,
        *,
        t0: float | None = None,
        fault: str | None = None,
        keepalive_timeout_s: float = 3.0,
        noise_counts: int = 2,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.trace = trace
        self.t0 = time.monotonic() if t0 is None else t0
        self.fault = fault
        self.keepalive_timeout_s = keepalive_timeout_s
        #: ADC noise in counts of 10 uA, as a real tester shows even on a steady load
        self.noise_counts = noise_counts
        self.third_request = 0x82 if model == "fnb58" else 0x83
        self.requests: list[int] = []
        self.bad_requests = 0
        self.packets_sent = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._startup: list[int] = []
        self._streaming = False
        self._next_due = 0.0
        self._last_keepalive = 0.0
        self._plugged = True
        self.ep_out = _OutEndpoint(self)
        self.ep_in = _InEndpoint(self)

    @property
    def endpoints(self) -> tuple[_OutEndpoint, _InEndpoint]:
        return self.ep_out, self.ep_in

    def unplug(self) -> None:
        with self._lock:
            self._plugged = False
            self._streaming = False
            self._startup = []

    def replug(self) -> None:
        with self._lock:
            self._plugged = True

    def handle_request(self, data: bytes) -> int:
        """Process one 64-byte request from the host."""
        with self._lock:
            if not self._plugged:
                raise usb.core.USBError("No such device", errno=errno.ENODEV)
            if len(data) != PACKET_LEN or data[0] != 0xAA or data[63] != crc8(data[1:63]):
                self.bad_requests += 1
                return len(data)  # the real device ignores what it cannot decode
            kind = data[1]
            self.requests.append(kind)
            now = time.monotonic()
            expected = [0x81, 0x82, self.third_request]
            if kind == 0x81:
                self._startup = [0x81]
                self._streaming = False
            elif not self._streaming and self._startup:
                self._startup.append(kind)
                if self._startup == expected:
                    self._streaming = True
                    self._next_due = now + PACKET_PERIOD_S
                    self._last_keepalive = now
                elif self._startup != expected[: len(self._startup)]:
                    self._startup = []
            if kind == 0x83 and self._streaming:
                self._last_keepalive = now
            return len(data)

    def next_packet(self, size: int, timeout_s: float) -> bytes:
        """Block like an interrupt IN transfer until the next packet or the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if not self._plugged:
                    raise usb.core.USBError("No such device", errno=errno.ENODEV)
                now = time.monotonic()
                if self._streaming and now - self._last_keepalive > self.keepalive_timeout_s:
                    self._streaming = False  # firmware freezes without keep-alives
                live = self._streaming and self.fault != "stall"
                if live and now >= self._next_due:
                    if now - self._next_due > MAX_BACKLOG * PACKET_PERIOD_S:
                        # the host fell behind: older packets were lost, as on the bus
                        skipped = int((now - self._next_due) / PACKET_PERIOD_S)
                        self._next_due += skipped * PACKET_PERIOD_S
                    packet = self._packet(self._next_due)
                    self._next_due += PACKET_PERIOD_S
                    self.packets_sent += 1
                    return packet[:size]
                wait_until = self._next_due if live else deadline
            if now >= deadline:
                raise usb.core.USBTimeoutError("Operation timed out", errno=errno.ETIMEDOUT)
            time.sleep(max(min(wait_until, deadline) - now, 0.0005))

    def _packet(self, t_due: float) -> bytes:
        samples = []
        for i in range(4):
            rel = t_due - (3 - i) * SAMPLE_PERIOD_S - self.t0
            if self.fault == "one_in_four" and i > 0:
                samples.append(samples[0])
                continue
            amps = self.trace.power_w(rel) / self.trace.volts
            noise = self._rng.randint(-self.noise_counts, self.noise_counts) * 1e-5
            samples.append(encode_sample(self.trace.volts, max(amps + noise, 0.0)))
        packet = data_packet(samples)
        if self.fault == "bad_crc":
            packet = packet[:63] + bytes([packet[63] ^ 0xFF])
        return packet
