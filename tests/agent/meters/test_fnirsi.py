"""FNIRSI FNB48 / FNB58 / C1: CRC, packet codec, and the driver against a fake endpoint."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.meters import create_meter
from agent.meters.emulate import fnirsi as emulator
from agent.meters.emulate.fnirsi import FakeFnirsi, data_packet, encode_sample
from agent.meters.emulate.traces import constant, ramp
from agent.meters.fnirsi import USB_IDS, crc8, decode_packet, request_packet
from agent.sampler import Sampler
from tasks.errors import MeterError, MeterProtocolError, MeterTimeout

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("request_type", "crc"), [(0x81, 0x8E), (0x82, 0x96), (0x83, 0x9E)])
def test_request_crcs_match_the_published_values(request_type: int, crc: int) -> None:
    packet = request_packet(request_type)
    assert len(packet) == 64 and packet[0] == 0xAA and packet[1] == request_type
    assert packet[63] == crc
    assert emulator.crc8(packet[1:63]) == crc8(packet[1:63]) == crc


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.integers(0, 65535),
            st.integers(0, 65535),
        ),
        min_size=4,
        max_size=4,
    )
)
def test_packets_decode_to_the_encoded_values(raw: list[tuple[int, int, int, int]]) -> None:
    samples = [encode_sample(v / 1e5, a / 1e5, dp / 1000, dm / 1000) for v, a, dp, dm in raw]
    decoded = decode_packet(data_packet(samples))
    assert decoded is not None
    for (v, a, dp, dm), got in zip(raw, decoded, strict=True):
        assert (got.volts, got.amps, got.dplus_v, got.dminus_v) == (
            v / 1e5,
            a / 1e5,
            dp / 1000,
            dm / 1000,
        )


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 63), st.integers(1, 255))
def test_any_corrupted_byte_is_caught(position: int, flip: int) -> None:
    packet = bytearray(data_packet([encode_sample(5.0, 0.5)] * 4))
    packet[position] ^= flip
    with pytest.raises(MeterProtocolError):
        decode_packet(bytes(packet))


@pytest.mark.parametrize(("kind", "third"), [("fnb58", 0x82), ("fnb48", 0x83), ("c1", 0x83)])
def test_driver_starts_the_stream_and_reads_100_samples_per_second(kind: str, third: int) -> None:
    device = FakeFnirsi(kind, ramp(2.0, 3.0, 1.0))
    meter = create_meter(kind, endpoints=device.endpoints)
    samples = []
    with meter:
        assert device.requests[:3] == [0x81, 0x82, third]
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            samples += meter.read()
    assert device.bad_requests == 0
    assert 90 <= len(samples) <= 110
    assert all(s.fresh for s in samples)
    times = [s.t for s in samples]
    assert times == sorted(times)
    for s in samples:
        expected = ramp(2.0, 3.0, 1.0).power_w(s.t - device.t0)
        assert s.watts == pytest.approx(expected, abs=0.03)
        assert s.volts == pytest.approx(5.1)


def test_keepalives_keep_the_stream_going() -> None:
    device = FakeFnirsi("fnb58", constant(2.0), keepalive_timeout_s=0.3)
    meter = create_meter("fnb58", endpoints=device.endpoints, keepalive_s=0.1)
    with meter:
        started = time.monotonic()
        count = 0
        while time.monotonic() - started < 0.8:
            count += len(meter.read())
    assert count >= 60
    assert device.requests.count(0x83) >= 5


def test_a_frozen_tester_times_out() -> None:
    device = FakeFnirsi("fnb58", constant(2.0), keepalive_timeout_s=0.2)
    meter = create_meter("fnb58", endpoints=device.endpoints, keepalive_s=5.0)
    with meter, pytest.raises(MeterTimeout, match="no data") as info:
        for _ in range(100):
            meter.read()
    assert "keepalive_s" in (info.value.hint or "")


def test_repeated_samples_are_marked() -> None:
    device = FakeFnirsi("c1", ramp(1.0, 5.0, 1.0), fault="one_in_four")
    with create_meter("c1", endpoints=device.endpoints) as meter:
        samples = meter.read() + meter.read()
    assert [s.fresh for s in samples] == [True, False, False, False] * 2


def test_bad_crc_is_a_protocol_error() -> None:
    device = FakeFnirsi("fnb48", constant(2.0), fault="bad_crc")
    meter = create_meter("fnb48", endpoints=device.endpoints)
    with meter, pytest.raises(MeterProtocolError, match="CRC"):
        meter.read()


def test_sampler_survives_unplugging() -> None:
    device = FakeFnirsi("fnb58", constant(2.0))
    events: list[str] = []
    sampler = Sampler(
        create_meter("fnb58", endpoints=device.endpoints),
        on_event=lambda level, msg: events.append(msg),
    )
    with sampler:
        time.sleep(0.3)
        device.unplug()
        time.sleep(0.5)
        assert sampler.stats().in_gap
        device.replug()
        deadline = time.monotonic() + 3
        while sampler.stats().in_gap and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
    assert len(events) == 1 and "unplugged" in events[0]
    gaps = sampler.gaps()
    assert len(gaps) == 1 and gaps[0].end_t is not None
    assert all(s.watts == pytest.approx(2.0, abs=1e-3) for s in sampler.samples())
    assert device.requests.count(0x81) == 2  # the stream was started again


def test_unplugged_tester_is_a_meter_error() -> None:
    device = FakeFnirsi("fnb58", constant(2.0))
    device.unplug()
    with pytest.raises(MeterError, match="unplugged"):
        create_meter("fnb58", endpoints=device.endpoints).open()


def test_udev_rule_covers_every_usb_id() -> None:
    text = (ROOT / "agent/meters/udev/99-tslm-fnirsi.rules").read_text()
    rules = set(re.findall(r'idVendor}=="([0-9a-f]{4})", ATTRS{idProduct}=="([0-9a-f]{4})"', text))
    wanted = {(f"{u.vendor:04x}", f"{u.product:04x}") for ids in USB_IDS.values() for u in ids}
    assert wanted == rules
    assert (ROOT / "agent/meters/udev/README.md").exists()
