"""UM24C / UM25C / UM34C: frame codec, and the real driver against a pty emulator."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.meters import create_meter
from agent.meters.emulate.traces import constant, ramp
from agent.meters.emulate.um import VOLT_DIV, UmEmulator, UmFields, encode_frame
from agent.meters.rdtech import MODELS, decode_frame, find_frame, um34c_checksum
from agent.sampler import Sampler
from tasks.errors import MeterError, MeterProtocolError, MeterTimeout

KINDS = ("um24c", "um25c", "um34c")
ROOT = Path(__file__).resolve().parents[3]

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    volts=u16,
    amps=u16,
    mw=u32,
    temp=st.integers(0, 200),
    group=st.integers(0, 9),
    mah=u32,
    mwh=u32,
)
def test_encoded_frames_decode_to_the_encoded_values(
    kind: str, volts: int, amps: int, mw: int, temp: int, group: int, mah: int, mwh: int
) -> None:
    frame = encode_frame(
        kind, UmFields(volts, amps, mw, temp_c=temp, group=group, group_mah=mah, group_mwh=mwh)
    )
    reading = decode_frame(frame, MODELS[kind])
    volt_div, amp_div = {"um24c": (100, 1000), "um25c": (1000, 10000), "um34c": (100, 1000)}[kind]
    assert reading.volts == volts / volt_div
    assert reading.amps == amps / amp_div
    assert reading.watts == mw / 1000
    assert reading.temp_c == temp
    assert reading.model_id == int.from_bytes(frame[:2], "big")


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(KINDS), junk=st.binary(max_size=300), volts=u16)
def test_resync_finds_the_frame_after_any_garbage(kind: str, junk: bytes, volts: int) -> None:
    frame = encode_frame(kind, UmFields(volts, 1234, 5678))
    buffer = bytearray(junk + frame)
    found = find_frame(buffer, MODELS[kind])
    if find_frame(bytearray(junk), MODELS[kind]) is None:  # junk holding a frame by chance
        assert found == frame


@pytest.mark.parametrize("kind", KINDS)
def test_short_and_corrupted_frames_are_rejected(kind: str) -> None:
    model = MODELS[kind]
    frame = encode_frame(kind, UmFields(500, 250, 1250))
    with pytest.raises(MeterProtocolError, match="130"):
        decode_frame(frame[:-1], model)
    broken = bytearray(frame)
    broken[129] ^= 0x01
    with pytest.raises(MeterProtocolError):
        decode_frame(bytes(broken), model)
    assert find_frame(bytearray(frame[:100]), model) is None


def test_um34c_checksum_covers_the_documented_positions() -> None:
    frame = bytearray(encode_frame("um34c", UmFields(512, 100, 512)))
    before = um34c_checksum(frame)
    frame[5] ^= 0xFF  # position 5 is not covered
    assert um34c_checksum(frame) == before
    frame[7] ^= 0xFF  # position 7 is
    assert um34c_checksum(frame) != before


@pytest.mark.parametrize("kind", KINDS)
def test_driver_reads_the_trace_and_marks_repeats(kind: str) -> None:
    with UmEmulator(kind, ramp(1.0, 4.0, 3.0)) as emu:
        meter = create_meter(kind, port=emu.port)
        meter.open()
        try:
            samples = []
            end = time.monotonic() + 1.3
            while time.monotonic() < end:
                samples += meter.read()
                time.sleep(0.05)
        finally:
            meter.close()
    fresh = [s for s in samples if s.fresh]
    assert 2 <= len(fresh) <= 4  # the meter refreshes every 0.5 s
    assert len(samples) > 2 * len(fresh)  # polled faster: repeats, marked as such
    volts = 5.1
    for s in fresh:
        assert s.volts == pytest.approx(round(volts * VOLT_DIV[kind]) / VOLT_DIV[kind])
        assert 1.0 <= s.watts <= 4.0  # type: ignore[operator]
    assert [s.watts for s in fresh] == sorted(s.watts for s in fresh)  # rising ramp


@pytest.mark.parametrize(
    ("fault", "rate"), [("garbage", 1.0), ("truncated", 0.5), ("drop", 0.5), ("bad_end", 0.5)]
)
def test_intermittent_faults_still_give_correct_values(fault: str, rate: float) -> None:
    with UmEmulator("um25c", constant(2.5), fault=fault, fault_rate=rate, seed=3) as emu:
        meter = create_meter("um25c", port=emu.port)
        with meter:
            readings = [meter.read()[0] for _ in range(4)]
    for sample in readings:
        assert sample.watts == 2.5
        assert sample.volts == 5.1


@pytest.mark.parametrize("kind", KINDS)
def test_always_broken_frames_end_in_a_protocol_error(kind: str) -> None:
    with UmEmulator(kind, constant(2.0), fault="bad_end") as emu:
        meter = create_meter(kind, port=emu.port, timeout_s=0.8)
        with pytest.raises(MeterProtocolError, match="no valid 130-byte frame"):
            meter.open()


def test_a_port_that_never_answers_times_out_with_a_clear_message() -> None:
    with UmEmulator("um25c", constant(2.0), fault="silent") as emu:
        meter = create_meter("um25c", port=emu.port, timeout_s=0.6)
        started = time.monotonic()
        with pytest.raises(MeterTimeout) as info:
            meter.open()
        assert time.monotonic() - started < 2.0
    assert "no answer" in info.value.message and emu.port in info.value.message
    assert "wrong port" in (info.value.hint or "")


def test_the_wrong_kind_is_recognised() -> None:
    with UmEmulator("um24c", constant(2.0)) as emu:
        meter = create_meter("um25c", port=emu.port, timeout_s=0.6)
        with pytest.raises(MeterProtocolError, match="UM24C frames"):
            meter.open()


def test_a_missing_port_is_a_meter_error(tmp_path: Path) -> None:
    meter = create_meter("um24c", port=str(tmp_path / "rfcomm9"))
    with pytest.raises(MeterError, match="cannot open serial port") as info:
        meter.open()
    assert "rfcomm bind" in (info.value.hint or "")


@pytest.mark.parametrize("same_path", [True, False])
def test_sampler_marks_a_gap_when_the_port_disappears_and_reconnects(
    tmp_path: Path, same_path: bool
) -> None:
    link = tmp_path / "rfcomm0"
    events: list[tuple[str, str]] = []
    with UmEmulator("um34c", constant(3.0), link=link) as emu:
        sampler = Sampler(
            create_meter("um34c", port=str(link), timeout_s=0.5),
            on_event=lambda level, msg: events.append((level, msg)),
        )
        with sampler:
            time.sleep(0.6)
            emu.disappear()
            t_gone = time.monotonic()
            time.sleep(1.0)
            assert sampler.stats().in_gap
            new_path = emu.reappear(same_path=same_path)
            if not same_path:  # the user re-binds: the link points at the new pty
                link.symlink_to(new_path)
            deadline = time.monotonic() + 5
            while sampler.stats().in_gap and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.6)
        gaps = sampler.gaps()
    assert len(gaps) == 1 and gaps[0].end_t is not None
    assert gaps[0].start_t <= t_gone + 0.2 and gaps[0].end_t > t_gone + 1.0
    assert [level for level, _ in events] == ["warning"]
    assert "UM34C" in events[0][1]
    after = [s for s in sampler.samples(gaps[0].end_t) if s.fresh]
    assert after and all(s.watts == 3.0 for s in after)
    window = sampler.window(t_gone - 0.3, t_gone + 0.5)
    assert window.gap and window.under_resolved


def test_emulator_runs_in_another_process(tmp_path: Path) -> None:
    link = tmp_path / "rfcomm0"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.meters.emulate.um",
            "--kind",
            "um24c",
            "--trace",
            "const:1.5",
            "--link",
            str(link),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == str(link)
        with create_meter("um24c", port=str(link)) as meter:
            assert meter.read()[0].watts == 1.5
        proc.stdin.write("fault silent\n")
        proc.stdin.flush()
        time.sleep(0.2)
        with pytest.raises(MeterTimeout):
            create_meter("um24c", port=str(link), timeout_s=0.5).open()
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
