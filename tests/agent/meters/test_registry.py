"""The meter registry: every entry imports, unknown names and options are explained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.meters import KNOWN_METER_KINDS, METERS, create_meter, meter_factory
from agent.meters.base import Meter
from agent.meters.none import NoMeter
from tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("kind", sorted(METERS))
def test_every_registered_meter_imports(kind: str) -> None:
    factory = meter_factory(kind)
    if isinstance(factory, type):
        assert issubclass(factory, Meter)
        assert factory.kind == kind
    else:
        assert callable(factory)


def test_known_kinds_match_the_registry() -> None:
    assert set(KNOWN_METER_KINDS) == set(METERS)
    assert {
        "um24c",
        "um25c",
        "um34c",
        "fnb48",
        "fnb58",
        "c1",
        "hwmon",
        "pi5-pmic",
        "rapl",
        "none",
        "auto",
    } == set(KNOWN_METER_KINDS)


def test_importing_the_package_loads_no_meter_library() -> None:
    code = "import agent.meters, sys; print(' '.join(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not {"serial", "usb", "usb.core"} & set(loaded)


def test_unknown_kind_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as info:
        create_meter("um25")
    assert "did you mean" in info.value.message and "'um25c'" in info.value.message
    assert "pi5-pmic" in (info.value.hint or "")


def test_unknown_option_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        create_meter("um25c", port="/dev/null", baud=9600)
    assert "'baud'" in info.value.message and "'baudrate'" in info.value.message
    assert "timeout_s" in (info.value.hint or "")


def test_string_options_are_converted_to_their_types() -> None:
    meter = create_meter("um24c", port="/dev/rfcomm3", baudrate="115200", timeout_s="1.5")
    assert (meter.baudrate, meter.timeout_s) == (115200, 1.5)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="timeout_s='soon'"):
        create_meter("um24c", timeout_s="soon")


def test_none_meter_says_why() -> None:
    meter = create_meter("none")
    assert isinstance(meter, NoMeter)
    assert meter.nominal_period_s is None
    assert meter.read() == []
    assert "not measured" in meter.description


def test_auto_without_rapl_is_none_with_the_reason(tmp_path: Path) -> None:
    meter = create_meter("auto", sysfs_root=str(tmp_path))
    assert isinstance(meter, NoMeter)
    assert "RAPL" in meter.description and "powercap" in meter.description
