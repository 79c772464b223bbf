"""FNIRSI FNB48 / FNB58 / C1 USB testers over their HID interface (pyusb).

Requests and replies are 64-byte packets framed by 0xAA and closed by a CRC-8. After the
start-up sequence the tester streams data packets of four samples each (about 100
samples a second) as long as it receives keep-alive requests. The udev rule in
``agent/meters/udev/`` lets a non-root user open it.

Tests and tools may pass ``endpoints=(out, in)``: two objects with the ``write(data,
timeout)`` / ``read(size, timeout)`` methods of pyusb endpoints (timeouts in ms,
``usb.core.USBTimeoutError`` and ``usb.core.USBError`` on failure).
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from agent.meters.base import Meter, Sample
from tasks.errors import MeterError, MeterProtocolError, MeterTimeout

PACKET_LEN = 64
SAMPLES_PER_PACKET = 4
SAMPLE_LEN = 15
SAMPLE_PERIOD_S = 0.01
CRC_POLY = 0x39
CRC_INIT = 0x42
REQ_START = 0x81
REQ_SETUP = 0x82
REQ_KEEPALIVE = 0x83
DATA_TYPE = 0x04
READ_TIMEOUT_MS = 1000
UDEV_RULE = "agent/meters/udev/99-tslm-fnirsi.rules"


def crc8(data: bytes) -> int:
    """CRC-8 of the FNIRSI protocol: polynomial 0x39, initial 0x42, no reflection."""
    crc = CRC_INIT
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def request_packet(request_type: int) -> bytes:
    """The 64-byte request 0xAA, type, 61 zero bytes, CRC."""
    body = bytes([0xAA, request_type]) + bytes(PACKET_LEN - 3)
    return body + bytes([crc8(body[1:])])


@dataclass(frozen=True)
class FnirsiSample:
    """One decoded 15-byte sample."""

    volts: float
    amps: float
    dplus_v: float
    dminus_v: float
    temp_c: float
    raw: bytes


def decode_packet(packet: bytes) -> list[FnirsiSample] | None:
    """Decode a reply; None for a valid non-data packet, MeterProtocolError when corrupt."""
    if len(packet) != PACKET_LEN:
        raise MeterProtocolError(f"FNIRSI: packet of {len(packet)} bytes, expected 64")
    if packet[0] != 0xAA:
        raise MeterProtocolError(f"FNIRSI: packet starts with 0x{packet[0]:02X}, not 0xAA")
    if packet[63] != crc8(packet[1:63]):
        raise MeterProtocolError(
            f"FNIRSI: CRC mismatch (0x{packet[63]:02X} != 0x{crc8(packet[1:63]):02X})"
        )
    if packet[1] != DATA_TYPE:
        return None
    samples = []
    for i in range(SAMPLES_PER_PACKET):
        raw = packet[2 + SAMPLE_LEN * i : 2 + SAMPLE_LEN * (i + 1)]
        samples.append(
            FnirsiSample(
                volts=int.from_bytes(raw[0:4], "little") / 1e5,
                amps=int.from_bytes(raw[4:8], "little") / 1e5,
                dplus_v=int.from_bytes(raw[8:10], "little") / 1000,
                dminus_v=int.from_bytes(raw[10:12], "little") / 1000,
                temp_c=int.from_bytes(raw[13:15], "little") / 10,
                raw=bytes(raw),
            )
        )
    return samples


@dataclass(frozen=True)
class UsbId:
    """One USB identity of a tester and how it starts."""

    vendor: int
    product: int
    label: str
    #: third start-up request: 0x82 again (FNB58, FNB48S) or 0x83 (FNB48, C1)
    third_request: int
    keepalive_s: float

    def __str__(self) -> str:
        return f"{self.vendor:04x}:{self.product:04x}"


USB_IDS: dict[str, tuple[UsbId, ...]] = {
    "fnb48": (
        UsbId(0x0483, 0x003A, "FNB48", REQ_KEEPALIVE, 0.0),
        UsbId(0x2E3C, 0x0049, "FNB48S", REQ_SETUP, 1.0),
    ),
    "fnb58": (UsbId(0x2E3C, 0x5558, "FNB58", REQ_SETUP, 1.0),),
    "c1": (UsbId(0x0483, 0x003B, "C1", REQ_KEEPALIVE, 0.0),),
}


class FnirsiMeter(Meter):
    """A FNIRSI USB tester; the model is chosen by the subclass."""

    scope = "USB power through the tester"
    boundary = "USB input"
    usb_kind: ClassVar[str]

    def __init__(
        self,
        *,
        bus: int | None = None,
        address: int | None = None,
        serial: str | None = None,
        keepalive_s: float | None = None,
        endpoints: tuple[Any, Any] | None = None,
    ) -> None:
        self.bus = bus
        self.address = address
        self.serial = serial
        self._keepalive_override = keepalive_s
        self._injected = endpoints
        self._usb_id = USB_IDS[self.usb_kind][0]
        self._device: Any = None
        self._interface: int | None = None
        self._ep_out: Any = None
        self._ep_in: Any = None
        self._last_keepalive = 0.0
        self._last_t: float | None = None

    @property
    def nominal_period_s(self) -> float:
        return SAMPLE_PERIOD_S

    @property
    def poll_period_s(self) -> float:
        return 0.0  # read() blocks on the interrupt endpoint until a packet is due

    @property
    def keepalive_s(self) -> float:
        if self._keepalive_override is not None:
            return self._keepalive_override
        return self._usb_id.keepalive_s

    @property
    def model_name(self) -> str:
        return f"FNIRSI {self._usb_id.label}"

    @property
    def description(self) -> str:
        where = "injected endpoints" if self._injected else f"USB {self._usb_id}"
        if self.bus is not None:
            where += f" bus {self.bus}"
        if self.address is not None:
            where += f" address {self.address}"
        if self.serial:
            where += f" serial {self.serial}"
        return f"FNIRSI {self._usb_id.label} ({where}, {self.scope})"

    def open(self) -> None:
        """Find the tester, claim its HID interface and send the start-up requests."""
        self.close()
        if self._injected is not None:
            self._ep_out, self._ep_in = self._injected
        else:
            self._open_usb()
        self._last_t = None
        self._write(request_packet(REQ_START))
        self._write(request_packet(REQ_SETUP))
        self._write(request_packet(self._usb_id.third_request))
        self._last_keepalive = time.monotonic()

    def read(self) -> list[Sample]:
        """Read one data packet (four samples, the last one timestamped now)."""
        if self._ep_in is None:
            raise MeterError(f"{self.description} is not open")
        now = time.monotonic()
        if now - self._last_keepalive >= self.keepalive_s:
            self._write(request_packet(REQ_KEEPALIVE))
            self._last_keepalive = now
        for _ in range(8):  # skip a few non-data replies (acknowledgements)
            packet = self._read_packet()
            decoded = decode_packet(packet)
            if decoded is not None:
                break
        else:
            raise MeterProtocolError(f"{self.description}: no data packets, only replies")
        t_rx = time.monotonic()
        samples = []
        # some units send one new sample per packet, repeated four times: then only the
        # first counts as fresh (real readings are noisy enough never to repeat exactly)
        repeated = all(s.raw == decoded[0].raw for s in decoded)
        for i, raw in enumerate(decoded):
            t = t_rx - (SAMPLES_PER_PACKET - 1 - i) * SAMPLE_PERIOD_S
            if self._last_t is not None and t <= self._last_t:
                t = self._last_t + 1e-6  # packets that queued up arrive back to back
            self._last_t = t
            fresh = i == 0 or not repeated
            samples.append(
                Sample(t=t, watts=raw.volts * raw.amps, volts=raw.volts, amps=raw.amps, fresh=fresh)
            )
        return samples

    def close(self) -> None:
        if self._device is not None:
            try:
                import usb.util

                usb.util.release_interface(self._device, self._interface)
                usb.util.dispose_resources(self._device)
            except Exception:  # the device may be gone already; closing must not fail
                pass
        self._device = None
        self._ep_out = None
        self._ep_in = None

    def _write(self, packet: bytes) -> None:
        import usb.core

        try:
            self._ep_out.write(packet, READ_TIMEOUT_MS)
        except usb.core.USBTimeoutError as exc:
            raise MeterTimeout(f"{self.description}: request not accepted in time") from exc
        except usb.core.USBError as exc:
            raise self._usb_failure(exc) from exc

    def _read_packet(self) -> bytes:
        import usb.core

        try:
            return bytes(self._ep_in.read(PACKET_LEN, READ_TIMEOUT_MS))
        except usb.core.USBTimeoutError as exc:
            raise MeterTimeout(
                f"{self.description}: no data for {READ_TIMEOUT_MS / 1000:g} s",
                hint="some firmware stops streaming without frequent keep-alives: "
                "try the option keepalive_s=0.05",
            ) from exc
        except usb.core.USBError as exc:
            raise self._usb_failure(exc) from exc

    def _usb_failure(self, exc: Exception) -> MeterError:
        code = getattr(exc, "errno", None)
        if code == errno.ENODEV:
            return MeterError(f"{self.description}: the tester was unplugged")
        if code == errno.EACCES:
            return MeterError(
                f"{self.description}: permission denied",
                hint=f"install the udev rule {UDEV_RULE} (see the README there)",
            )
        return MeterError(f"{self.description}: USB error: {exc}")

    def _open_usb(self) -> None:
        try:
            import usb.core
            import usb.util
        except ImportError as exc:
            raise MeterError(
                "FNIRSI meters need pyusb",
                hint="pip install pyusb (and the libusb-1.0 system library)",
            ) from exc
        try:
            candidates = []
            for usb_id in USB_IDS[self.usb_kind]:
                for dev in usb.core.find(
                    find_all=True, idVendor=usb_id.vendor, idProduct=usb_id.product
                ):
                    if self.bus is not None and dev.bus != self.bus:
                        continue
                    if self.address is not None and dev.address != self.address:
                        continue
                    if self.serial and usb.util.get_string(dev, dev.iSerialNumber) != self.serial:
                        continue
                    candidates.append((usb_id, dev))
        except usb.core.NoBackendError as exc:
            raise MeterError(
                "pyusb found no libusb backend", hint="install libusb: apt-get install libusb-1.0-0"
            ) from exc
        except usb.core.USBError as exc:
            raise self._usb_failure(exc) from exc
        ids = ", ".join(str(u) for u in USB_IDS[self.usb_kind])
        if not candidates:
            raise MeterError(
                f"no FNIRSI {self.usb_kind.upper()} found (USB {ids})",
                hint="plug the tester in and check `lsusb`; select one with "
                "the options bus/address or serial",
            )
        if len(candidates) > 1:
            raise MeterError(
                f"{len(candidates)} FNIRSI {self.usb_kind.upper()} testers found",
                hint="choose one with the options bus and address, or serial",
            )
        self._usb_id, device = candidates[0]
        try:
            cfg = device.get_active_configuration()
            hid = usb.util.find_descriptor(cfg, bInterfaceClass=0x03)
            if hid is None:
                raise MeterError(f"{self.description}: no HID interface")
            self._interface = hid.bInterfaceNumber
            if device.is_kernel_driver_active(self._interface):
                device.detach_kernel_driver(self._interface)
            usb.util.claim_interface(device, self._interface)

            def direction(want: int) -> Any:
                return usb.util.find_descriptor(
                    hid,
                    custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress) == want,
                )

            self._ep_out = direction(usb.util.ENDPOINT_OUT)
            self._ep_in = direction(usb.util.ENDPOINT_IN)
        except usb.core.USBError as exc:
            raise self._usb_failure(exc) from exc
        self._device = device
        if self._ep_out is None or self._ep_in is None:
            self.close()
            raise MeterError(f"{self.description}: HID interface lacks IN/OUT endpoints")


class FNB48(FnirsiMeter):
    """FNIRSI FNB48 (0483:003A) or FNB48S (2E3C:0049)."""

    kind = "fnb48"
    usb_kind = "fnb48"


class FNB58(FnirsiMeter):
    """FNIRSI FNB58 (2E3C:5558)."""

    kind = "fnb58"
    usb_kind = "fnb58"


class C1(FnirsiMeter):
    """FNIRSI C1 (0483:003B)."""

    kind = "c1"
    usb_kind = "c1"
