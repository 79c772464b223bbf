"""RDTech UM24C / UM25C / UM34C USB meters over a serial port (Bluetooth RFCOMM or USB).

The host writes the byte 0xF0; the meter answers with one 130-byte big-endian frame.
The meters refresh about twice a second, so the driver polls faster than that and
marks unchanged frames as repeats. Every frame is validated (model id, end bytes or
the UM34C XOR byte); a broken stream is resynchronised by scanning for the model id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from agent.meters.base import Meter, RepeatDetector, Sample
from tasks.errors import MeterError, MeterProtocolError, MeterTimeout

FRAME_LEN = 130
REQUEST = b"\xf0"
END_BYTES = b"\xff\xf1"
#: byte positions whose XOR is the last byte of a UM34C frame
UM34C_XOR_POSITIONS: tuple[int, ...] = (
    1, 3, 7, 9, 15, 17, 19, 23, 31, 39, 41, 45, 49, 53, 55, 57, 59, 63, 67, 69, 73, 79, 83,
    89, 97, 99, 109, 111, 113, 119, 121, 127,
)  # fmt: skip
#: the meters refresh their reading about this often
REFRESH_S = 0.5
#: how long to wait for a reply before sending the request again (requests get dropped)
RESEND_AFTER_S = 0.35


@dataclass(frozen=True)
class UmModel:
    """Per-model constants of the UM series."""

    name: str
    model_id: int
    #: volts = count / volts_divisor, amps = count / amps_divisor
    volts_divisor: int
    amps_divisor: int
    xor_check: bool


MODELS: dict[str, UmModel] = {
    "um24c": UmModel("UM24C", 0x0963, 100, 1000, xor_check=False),
    "um25c": UmModel("UM25C", 0x09C9, 1000, 10000, xor_check=False),
    "um34c": UmModel("UM34C", 0x0D4C, 100, 1000, xor_check=True),
}
_MODEL_BY_ID = {m.model_id: m for m in MODELS.values()}


@dataclass(frozen=True)
class UmReading:
    """The measurement fields of one decoded frame (the rest is kept raw)."""

    model_id: int
    volts: float
    amps: float
    watts: float
    temp_c: int
    raw: bytes


def um34c_checksum(frame: bytes) -> int:
    """XOR of the UM34C checksum positions of ``frame``."""
    value = 0
    for pos in UM34C_XOR_POSITIONS:
        value ^= frame[pos]
    return value


def frame_error(frame: bytes, model: UmModel) -> str | None:
    """Why ``frame`` is not a valid frame of ``model``, or None when it is."""
    if len(frame) != FRAME_LEN:
        return f"frame has {len(frame)} bytes, expected {FRAME_LEN}"
    model_id = int.from_bytes(frame[0:2], "big")
    if model_id != model.model_id:
        return f"model id 0x{model_id:04X}, expected 0x{model.model_id:04X} ({model.name})"
    if model.xor_check:
        if frame[129] != um34c_checksum(frame):
            return f"checksum byte 0x{frame[129]:02X} != 0x{um34c_checksum(frame):02X}"
    elif frame[128:130] != END_BYTES:
        return f"end bytes {frame[128:130].hex()} != fff1"
    return None


def decode_frame(frame: bytes, model: UmModel) -> UmReading:
    """Decode one validated frame; raise MeterProtocolError when it does not validate."""
    problem = frame_error(frame, model)
    if problem is not None:
        raise MeterProtocolError(f"{model.name}: invalid frame: {problem}")
    volts = int.from_bytes(frame[2:4], "big") / model.volts_divisor
    amps = int.from_bytes(frame[4:6], "big") / model.amps_divisor
    watts = int.from_bytes(frame[6:10], "big") / 1000
    temp_c = int.from_bytes(frame[10:12], "big")
    return UmReading(model.model_id, volts, amps, watts, temp_c, bytes(frame))


def find_frame(buffer: bytearray, model: UmModel) -> bytes | None:
    """Take the first valid frame out of ``buffer``, discarding bytes before it.

    Bytes that cannot start a valid frame are dropped from the front; an incomplete
    candidate is left in place for more bytes to arrive.
    """
    marker = model.model_id.to_bytes(2, "big")
    while True:
        start = buffer.find(marker)
        if start < 0:
            # keep a trailing first marker byte: the id may be split across reads
            keep = 1 if buffer[-1:] == marker[:1] else 0
            del buffer[: len(buffer) - keep]
            return None
        if start:
            del buffer[:start]
        if len(buffer) < FRAME_LEN:
            return None
        candidate = bytes(buffer[:FRAME_LEN])
        if frame_error(candidate, model) is None:
            del buffer[:FRAME_LEN]
            return candidate
        del buffer[:1]


class UmMeter(Meter):
    """A UM24C, UM25C or UM34C on a serial port."""

    model: ClassVar[UmModel]
    scope = "USB power through the meter"
    boundary = "USB input"

    def __init__(
        self,
        *,
        port: str,
        baudrate: int = 9600,
        timeout_s: float = 3.0,
        poll_period_s: float = 0.1,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self._poll_period_s = poll_period_s
        self._serial: Any = None
        self._buffer = bytearray()
        self._repeats = RepeatDetector(REFRESH_S)
        self.last_reading: UmReading | None = None

    @property
    def nominal_period_s(self) -> float:
        return REFRESH_S

    @property
    def poll_period_s(self) -> float:
        return self._poll_period_s

    @property
    def model_name(self) -> str:
        return f"RDTech {self.model.name}"

    @property
    def description(self) -> str:
        return f"RDTech {self.model.name} on {self.port} ({self.scope})"

    def open(self) -> None:
        """Open the port and check that a meter of the right model answers."""
        import serial

        self.close()
        try:
            self._serial = serial.Serial(
                self.port, baudrate=self.baudrate, timeout=0.05, write_timeout=1.0
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise MeterError(
                f"{self.model.name}: cannot open serial port {self.port}: {exc}",
                hint="check the path; for Bluetooth, pair the meter and run "
                "`rfcomm bind 0 <MAC>` (release and bind again after the meter lost power)",
            ) from exc
        self._repeats.reset()
        self._buffer.clear()
        try:
            self._request_frame(first=True)
        except MeterError:
            self.close()
            raise

    def read(self) -> list[Sample]:
        """Poll one frame; a frame identical to the previous one is marked not fresh."""
        if self._serial is None:
            raise MeterError(f"{self.model.name} on {self.port} is not open")
        t, reading = self._request_frame(first=False)
        fresh = self._repeats.is_fresh(reading.raw[2:16], t)
        return [
            Sample(t=t, watts=reading.watts, volts=reading.volts, amps=reading.amps, fresh=fresh)
        ]

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except Exception:  # the port may already be gone; closing must not fail
                pass
            self._serial = None

    def _request_frame(self, *, first: bool) -> tuple[float, UmReading]:
        """Send 0xF0 (again when the meter ignores it) until a valid frame arrives."""
        import termios

        import serial

        deadline = time.monotonic() + self.timeout_s
        resend_at = 0.0
        t_request = time.monotonic()
        received = 0
        seen = bytearray()  # the first bytes received, to recognise another model
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                if now >= resend_at:
                    self._serial.reset_input_buffer()
                    self._buffer.clear()
                    t_request = time.monotonic()
                    self._serial.write(REQUEST)
                    resend_at = t_request + RESEND_AFTER_S
                chunk = self._serial.read(FRAME_LEN - len(self._buffer) or 1)
                received += len(chunk)
                if len(seen) < 2 * FRAME_LEN:
                    seen += chunk
                self._buffer += chunk
                frame = find_frame(self._buffer, self.model)
                if frame is not None:
                    reading = decode_frame(frame, self.model)
                    self.last_reading = reading
                    return t_request, reading
        except (serial.SerialException, OSError, termios.error) as exc:
            # a pty or RFCOMM device that vanished fails in tcflush with termios.error
            raise MeterError(
                f"{self.model.name} on {self.port}: port failed: {exc}",
                hint="the meter or its Bluetooth link went away; the sampler reconnects",
            ) from exc
        if first and received == 0:
            raise MeterTimeout(
                f"{self.model.name} on {self.port}: no answer to the 0xF0 request within "
                f"{self.timeout_s:g} s",
                hint="wrong port, meter switched off, or Bluetooth not connected: check "
                "`rfcomm` and that the meter shows its Bluetooth icon",
            )
        if received == 0:
            raise MeterTimeout(
                f"{self.model.name} on {self.port}: the meter stopped answering "
                f"(nothing for {self.timeout_s:g} s)"
            )
        other = _other_model_hint(bytes(seen), self.model)
        raise MeterProtocolError(
            f"{self.model.name} on {self.port}: {received} bytes in {self.timeout_s:g} s "
            f"but no valid {FRAME_LEN}-byte frame{other}",
            hint="check the meter kind in inventory.yaml and the port",
        )


def _other_model_hint(seen: bytes, expected: UmModel) -> str:
    """A note naming the model whose valid frame is in ``seen``, if not the expected one."""
    for model in _MODEL_BY_ID.values():
        if model is expected:
            continue
        if find_frame(bytearray(seen), model) is not None:
            return f" (these are {model.name} frames: is the meter kind right?)"
    return ""


class UM24C(UmMeter):
    """RDTech UM24C (10 mV, 1 mA resolution)."""

    kind = "um24c"
    model = MODELS["um24c"]


class UM25C(UmMeter):
    """RDTech UM25C (1 mV, 0.1 mA resolution)."""

    kind = "um25c"
    model = MODELS["um25c"]


class UM34C(UmMeter):
    """RDTech UM34C (10 mV, 1 mA resolution, XOR-checked frames)."""

    kind = "um34c"
    model = MODELS["um34c"]
