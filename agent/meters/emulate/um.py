"""RDTech UM24C / UM25C / UM34C emulator on a real pseudo-terminal.

The driver opens the pty's slave path (or a stable symlink to it, like /dev/rfcomm0)
with pyserial. The emulator answers each 0xF0 with a 130-byte frame built from a power
trace, refreshing the reading every 0.5 s to the mean power of that half second, like the
real meters, answering each request after a short delay (``reply_delay_s``), and can misbehave on
demand: ``silent``, ``truncated``, ``garbage`` (junk before the frame), ``bad_end``
(wrong end bytes / UM34C XOR), ``drop`` (ignore requests), ``wrong_model``; plus
``disappear()`` / ``reappear()`` of the port.

From another process::

    python -m agent.meters.emulate.um --kind um25c --trace const:2.5 [--link PATH]

prints the port path, then takes commands on stdin: ``fault NAME [RATE]``,
``disappear``, ``reappear [same|new]`` (prints the new path), ``quit``.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import sys
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

from agent.meters.emulate.traces import PowerTrace, parse_trace
from tasks.errors import ConfigError

FRAME_LEN = 130
#: model ids and scale divisors from the protocol table
MODEL_ID = {"um24c": 0x0963, "um25c": 0x09C9, "um34c": 0x0D4C}
VOLT_DIV = {"um24c": 100, "um25c": 1000, "um34c": 100}
AMP_DIV = {"um24c": 1000, "um25c": 10000, "um34c": 1000}
XOR_POSITIONS = (1, 3, 7, 9, 15, 17, 19, 23, 31, 39, 41, 45, 49, 53, 55, 57, 59, 63, 67, 69,
                 73, 79, 83, 89, 97, 99, 109, 111, 113, 119, 121, 127)  # fmt: skip
#: seconds from a request to the start of the reply (a UM25C over Bluetooth: tens of ms)
REPLY_DELAY_S = 0.03
FAULTS = ("silent", "truncated", "garbage", "bad_end", "drop", "wrong_model")


@dataclass(frozen=True)
class UmFields:
    """Raw integer fields of a frame (counts, before scaling)."""

    volts_count: int
    amps_count: int
    milliwatts: int
    temp_c: int = 31
    group: int = 0
    group_mah: int = 0
    group_mwh: int = 0
    dplus_count: int = 60
    dminus_count: int = 61
    charging_mode: int = 7
    load_deciohm: int = 100


def encode_frame(kind: str, fields: UmFields) -> bytes:
    """A valid 130-byte frame of ``kind`` carrying ``fields``."""
    frame = bytearray(FRAME_LEN)

    def put(offset: int, width: int, value: int) -> None:
        frame[offset : offset + width] = int(value).to_bytes(width, "big")

    put(0, 2, MODEL_ID[kind])
    put(2, 2, fields.volts_count)
    put(4, 2, fields.amps_count)
    put(6, 4, fields.milliwatts)
    put(10, 2, fields.temp_c)
    put(12, 2, round(fields.temp_c * 9 / 5 + 32))
    put(14, 2, fields.group)
    put(16 + 8 * fields.group, 4, fields.group_mah)
    put(20 + 8 * fields.group, 4, fields.group_mwh)
    put(96, 2, fields.dplus_count)
    put(98, 2, fields.dminus_count)
    put(100, 2, fields.charging_mode)
    put(110, 2, 10)  # recording threshold 0.10 A
    put(118, 2, 1)  # screen timeout
    put(120, 2, 5)  # brightness
    put(122, 4, fields.load_deciohm)
    if kind == "um34c":
        xor = 0
        for pos in XOR_POSITIONS:
            xor ^= frame[pos]
        frame[129] = xor
    else:
        frame[128:130] = b"\xff\xf1"
    return bytes(frame)


def fields_for(kind: str, watts: float, volts: float, mah: int = 0, mwh: int = 0) -> UmFields:
    """Frame fields of a reading of ``watts`` at ``volts``, on the model's resolution."""
    amps = watts / volts if volts else 0.0
    v_count = round(volts * VOLT_DIV[kind])
    a_count = round(amps * AMP_DIV[kind])
    load = round(volts / amps * 10) if amps > 0 else 9_999_999
    return UmFields(
        v_count,
        a_count,
        round(watts * 1000),
        group_mah=mah,
        group_mwh=mwh,
        load_deciohm=min(load, 2**32 - 1),
    )


class UmEmulator:
    """A UM meter on a pseudo-terminal; start() it, give ``port`` to the driver."""

    def __init__(
        self,
        kind: str,
        trace: PowerTrace,
        *,
        t0: float | None = None,
        link: str | os.PathLike[str] | None = None,
        refresh_s: float = 0.5,
        fault: str | None = None,
        fault_rate: float = 1.0,
        seed: int = 0,
        world_accessible: bool = False,
        reply_delay_s: float = REPLY_DELAY_S,
    ) -> None:
        if kind not in MODEL_ID:
            raise ConfigError(f"unknown UM model {kind!r}; known: {', '.join(MODEL_ID)}")
        self.reply_delay_s = reply_delay_s
        self.kind = kind
        self.trace = trace
        self.t0 = time.monotonic() if t0 is None else t0
        self.link = Path(link) if link is not None else None
        self.refresh_s = refresh_s
        self.fault = fault
        self.fault_rate = fault_rate
        self.world_accessible = world_accessible
        self.requests = 0
        self.replies = 0
        self._rng = random.Random(seed)
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mwh = 0.0
        self._mah = 0.0
        self._last_refresh_k: int | None = None
        self._frame = b""

    # ---- control ---------------------------------------------------------------------

    @property
    def port(self) -> str:
        """The path a driver should open: the link when there is one, else the pty."""
        if self.link is not None:
            return str(self.link)
        assert self._slave_path is not None, "emulator not started"
        return self._slave_path

    def start(self) -> UmEmulator:
        self._open_pty()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"um-emulator-{self.kind}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._close_pty()

    def __enter__(self) -> UmEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_fault(self, fault: str | None, rate: float = 1.0) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        self.fault, self.fault_rate = fault, rate

    def disappear(self) -> None:
        """The meter lost power / the Bluetooth link dropped: the port goes away."""
        self._close_pty()

    def reappear(self, same_path: bool = True) -> str:
        """The port comes back (at the link path when ``same_path``, else a new pty path)."""
        if not same_path:
            self.link = None
        self._open_pty()
        return self.port

    # ---- the meter ---------------------------------------------------------------------

    def current_frame(self, now: float | None = None) -> bytes:
        """The frame the meter shows now (the reading of its latest refresh)."""
        now = time.monotonic() if now is None else now
        k = int((now - self.t0) // self.refresh_s)
        if k != self._last_refresh_k:
            t_refresh = self.t0 + k * self.refresh_s
            rel = t_refresh - self.t0
            if self._last_refresh_k is not None:
                t_prev = self.t0 + self._last_refresh_k * self.refresh_s - self.t0
                energy = self.trace.energy_j(t_prev, rel)
                self._mwh += energy / 3.6
                self._mah += energy / self.trace.volts / 3.6
            # the meter shows the mean power of the period that just ended
            watts = self.trace.energy_j(rel - self.refresh_s, rel) / self.refresh_s
            self._frame = encode_frame(
                self.kind,
                fields_for(
                    self.kind,
                    watts,
                    self.trace.volts,
                    int(self._mah),
                    int(self._mwh),
                ),
            )
            self._last_refresh_k = k
        return self._frame

    def _reply(self) -> bytes:
        frame = self.current_frame()
        fault = self.fault if self._rng.random() < self.fault_rate else None
        if fault in ("silent", "drop"):
            return b""
        if fault == "truncated":
            return frame[: self._rng.randrange(10, FRAME_LEN - 1)]
        if fault == "garbage":
            junk = bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(1, 40)))
            return junk + frame
        if fault == "bad_end":
            broken = bytearray(frame)
            broken[129] ^= 0x5A
            return bytes(broken)
        if fault == "wrong_model":
            other = next(k for k in MODEL_ID if k != self.kind)
            return encode_frame(other, fields_for(other, 1.0, 5.0))
        return frame

    def _serve(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                master = self._master
            if master is None:
                self._stop.wait(0.02)
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(master, 256)
            except OSError:
                self._stop.wait(0.02)  # closed by disappear(), or no reader on the slave
                continue
            for byte in data:
                if byte != 0xF0:
                    continue  # other commands (screen, brightness, ...) get no reply
                self.requests += 1
                reply = self._reply()
                if reply and self.reply_delay_s > 0:
                    self._stop.wait(self.reply_delay_s)  # the meter's own processing time
                if reply:
                    self.replies += 1
                    try:
                        os.write(master, reply)
                    except OSError:
                        break

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no newline translation: a binary serial line
        path = os.ttyname(slave)
        if self.world_accessible:
            os.chmod(path, 0o666)
        with self._lock:
            self._master, self._slave, self._slave_path = master, slave, path
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(path)
            tmp.replace(self.link)

    def _close_pty(self) -> None:
        with self._lock:
            fds = (self._master, self._slave)
            self._master = self._slave = None
        if self.link is not None:
            self.link.unlink(missing_ok=True)
        for fd in fds:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def main(argv: list[str] | None = None) -> int:
    """Run an emulator for another process (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m agent.meters.emulate.um")
    parser.add_argument("--kind", choices=sorted(MODEL_ID), default="um25c")
    parser.add_argument("--trace", default="const:2.5")
    parser.add_argument("--link", help="stable symlink to the pty, like /dev/rfcomm0")
    parser.add_argument("--fault", choices=FAULTS)
    parser.add_argument("--fault-rate", type=float, default=1.0)
    parser.add_argument("--t0", type=float, help="trace origin on the monotonic clock")
    parser.add_argument(
        "--world-accessible",
        action="store_true",
        help="chmod the pty 0666 so another user can open it",
    )
    args = parser.parse_args(argv)
    emulator = UmEmulator(
        args.kind,
        parse_trace(args.trace),
        t0=args.t0,
        link=args.link,
        fault=args.fault,
        fault_rate=args.fault_rate,
        world_accessible=args.world_accessible,
    )
    emulator.start()
    print(emulator.port, flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            if words[0] == "fault":
                name = None if len(words) < 2 or words[1] == "none" else words[1]
                emulator.set_fault(name, float(words[2]) if len(words) > 2 else 1.0)
            elif words[0] == "disappear":
                emulator.disappear()
            elif words[0] == "reappear":
                print(emulator.reappear(same_path=words[1:] != ["new"]), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
