"""Meter options that name executables or file system roots stay under an allow-list: the
system locations, extended only by the inventory's ``defaults: {meter_roots: [...]}``."""

from __future__ import annotations

import pytest

from agent.meters import check_meter_options
from agent.protocol import JobSpec
from orchestrator.inventory import parse_inventory
from tasks.errors import InventoryError, JobSpecError
from tests.agent.test_jobs import spec_dict


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("pi5-pmic", {"vcgencmd": "/tmp/evil/vcgencmd"}),
        ("pi5-pmic", {"vcgencmd": "/usr/bin/../../tmp/vcgencmd"}),
        ("pi5-pmic", {"vcgencmd": "vcgencmd"}),
        ("hwmon", {"hwmon_name": "ina226", "sysfs_root": "/tmp/fake"}),
        ("hwmon", {"path": "../../etc"}),
        ("hwmon", {"path": "/etc/shadow"}),
        ("rapl", {"sysfs_root": "/home"}),
        ("auto", {"sysfs_root": "/tmp"}),
    ],
)
def test_paths_outside_the_system_locations_are_refused(kind: str, options: dict) -> None:
    problems = check_meter_options(kind, options)
    assert problems, options
    (message,) = problems.values()
    assert "allowed locations" in message or "leaves" in message or "absolute" in message


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("pi5-pmic", {"vcgencmd": "/usr/bin/vcgencmd"}),
        ("pi5-pmic", {}),
        ("hwmon", {"hwmon_name": "ina226"}),
        ("hwmon", {"path": "sys/class/hwmon/hwmon1"}),
        ("hwmon", {"path": "/sys/class/hwmon/hwmon1"}),
        ("rapl", {"sysfs_root": "/"}),
    ],
)
def test_system_locations_are_accepted(kind: str, options: dict) -> None:
    assert check_meter_options(kind, options) == {}


def test_the_inventory_defaults_extend_the_list() -> None:
    assert (
        check_meter_options(
            "hwmon", {"hwmon_name": "x", "sysfs_root": "/tmp/fake/sub"}, ("/tmp/fake",)
        )
        == {}
    )
    assert check_meter_options(
        "hwmon", {"hwmon_name": "x", "sysfs_root": "/tmp/fakeish"}, ("/tmp/fake",)
    )


INVENTORY = """\
defaults: {{meter_roots: {roots}}}
devices:
  pi5: {{host: h, meter: {{kind: pi5-pmic, vcgencmd: /opt/emu/vcgencmd}}}}
"""


def test_inventory_load_applies_the_allow_list() -> None:
    with pytest.raises(InventoryError) as info:
        parse_inventory(INVENTORY.format(roots="[]"), "inv.yaml")
    assert "inv.yaml:3 devices.pi5.meter.vcgencmd:" in info.value.message
    assert "meter_roots" in info.value.message
    inv = parse_inventory(INVENTORY.format(roots="[/opt/emu]"), "inv.yaml")
    assert inv["pi5"].meter_roots == ("/opt/emu",)
    with pytest.raises(InventoryError, match="not an absolute path"):
        parse_inventory(INVENTORY.format(roots="[opt/emu]"), "inv.yaml")


def test_a_device_cannot_extend_the_list_itself() -> None:
    text = "devices:\n  pi5: {host: h, meter_roots: [/], meter: {kind: none}}\n"
    with pytest.raises(InventoryError, match="unknown field 'meter_roots'"):
        parse_inventory(text, "inv.yaml")


def test_the_agent_applies_the_allow_list_of_the_job() -> None:
    spec = spec_dict()
    spec["meter"] = {"kind": "pi5-pmic", "vcgencmd": "/opt/emu/vcgencmd"}
    with pytest.raises(JobSpecError, match="outside the allowed locations"):
        JobSpec.from_dict(spec)
    spec["meter_roots"] = ["/opt/emu"]
    parsed = JobSpec.from_dict(spec)
    assert parsed.meter_roots == ("/opt/emu",)
    assert JobSpec.from_dict(parsed.to_dict()).meter_roots == ("/opt/emu",)
