"""Meter options are checked per kind, by the same rules on the controller (inventory.yaml)
and on the device (a job spec)."""

from __future__ import annotations

import pytest

from agent.meters import check_meter_options
from agent.protocol import JobSpec
from orchestrator.inventory import parse_inventory
from tasks.errors import InventoryError, JobSpecError
from tests.agent.test_jobs import spec_dict

INVENTORY = """\
devices:
  pi4:
    host: pi4.local
    meter:
      kind: um25c
      prot: /dev/ttyUSB0
  pi5: {host: pi5.local, meter: {kind: hwmon}}
"""


def inventory_error(text: str) -> str:
    with pytest.raises(InventoryError) as info:
        parse_inventory(text, "inv.yaml")
    return info.value.message


def test_a_misspelt_option_is_refused_with_file_line_accepted_keys_and_a_guess() -> None:
    message = inventory_error(INVENTORY)
    (typo,) = [line for line in message.splitlines() if "'prot'" in line]
    assert typo.startswith("inv.yaml:6 devices.pi4.meter.prot:")
    assert "did you mean 'port'?" in typo
    assert "accepted: port, baudrate, timeout_s, poll_period_s" in typo


def test_required_options_are_checked_at_load() -> None:
    message = inventory_error(INVENTORY)
    assert "inv.yaml:4 devices.pi4.meter.port: meter 'um25c' needs the option 'port'" in message
    assert "devices.pi5.meter.hwmon_name: meter 'hwmon' needs one of the options" in message


def test_option_types_are_checked_at_load() -> None:
    text = "devices:\n  pi4: {host: h, meter: {kind: um25c, port: /dev/x, baudrate: fast}}\n"
    assert "baudrate='fast' is not a valid int" in inventory_error(text)
    text = "devices:\n  pi4: {host: h, meter: {kind: um25c, port: [1, 2]}}\n"
    assert "option 'port': [1, 2] is not a valid str" in inventory_error(text)


def test_defaults_meter_is_checked_too() -> None:
    text = "defaults: {meter: {kind: rapl, domian: x}}\ndevices:\n  pi4: {host: h}\n"
    message = inventory_error(text)
    assert "inv.yaml:1 defaults.meter.domian:" in message and "'domain'" in message


def test_valid_meters_pass() -> None:
    inv = parse_inventory(
        "devices:\n  a: {host: h, meter: {kind: um25c, port: /dev/rfcomm0, timeout_s: 2}}\n"
        "  b: {host: h, meter: {kind: hwmon, hwmon_name: ina226}}\n"
        "  c: {host: h, meter: {kind: pi5-pmic}}\n"
    )
    assert inv["a"].meter.options() == {"port": "/dev/rfcomm0", "timeout_s": 2}


def test_the_agent_applies_the_same_rules_to_a_job_spec() -> None:
    spec = spec_dict()
    spec["meter"] = {"kind": "um25c", "prot": "/dev/ttyUSB0"}
    with pytest.raises(JobSpecError) as info:
        JobSpec.from_dict(spec)
    message = info.value.message
    assert "job.json.meter.prot:" in message and "did you mean 'port'?" in message
    assert "job.json.meter.port: meter 'um25c' needs the option 'port'" in message
    spec["meter"] = {"kind": "um25c", "port": "/dev/ttyUSB0"}
    assert JobSpec.from_dict(spec).meter.options == {"port": "/dev/ttyUSB0"}


def test_the_rules_are_one_function() -> None:
    assert check_meter_options("um25c", {"port": "/dev/x"}) == {}
    assert set(check_meter_options("um25c", {"prot": "/dev/x"})) == {"prot", "port"}
    assert "unknown meter kind" in check_meter_options("um26c", {})["kind"]
    assert check_meter_options("none", {}) == {}
