"""inventory.yaml: the example validates, errors name file:line and field, fuzzing is safe."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent.meters
from orchestrator.inventory import (
    DEFAULT_METER_KIND,
    INVENTORY_ENV,
    load_inventory,
    parse_inventory,
    resolve_inventory_path,
)
from tasks.errors import InventoryError

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
defaults: {user: pi, port: 22, identity_file: ~/.ssh/id_ed25519, known_hosts: ~/.ssh/known_hosts, python: ~/.tslm/venv/bin/python3, workdir: ~/.tslm}
devices:
  pi4: {host: pi4.local, board: raspberrypi4, tags: [pi4, lab], meter: {kind: um25c, port: /dev/rfcomm0}}
  pi5: {host: 192.0.2.15, tags: [pi5, lab], meter: {kind: pi5-pmic}}
  local: {transport: local, meter: {kind: auto}}
groups: {lab: [pi4, pi5]}
"""


def error_of(text: str, name: str = "inventory.yaml") -> InventoryError:
    with pytest.raises(InventoryError) as info:
        parse_inventory(text, name)
    return info.value


def test_the_example_inventory_of_the_repository_validates() -> None:
    inv = load_inventory(ROOT / "inventory.yaml")
    assert list(inv.devices) == ["pi4", "pi5", "local"]
    pi4 = inv["pi4"]
    assert (pi4.host, pi4.user, pi4.port, pi4.board) == ("pi4.local", "pi", 22, "raspberrypi4")
    assert pi4.meter.kind == "um25c" and pi4.meter.options() == {"port": "/dev/rfcomm0"}
    assert pi4.known_hosts == Path("~/.ssh/known_hosts").expanduser()
    assert pi4.python == "~/.tslm/venv/bin/python3" and pi4.workdir == "~/.tslm"
    assert inv.groups == {"lab": ("pi4", "pi5")}
    assert inv.tags["lab"] == ("pi4", "pi5")


def test_devices_override_defaults_and_local_uses_the_controller_python() -> None:
    inv = parse_inventory(
        GOOD.replace("pi5: {host: 192.0.2.15,", "pi5: {host: 192.0.2.15, port: 2222, user: lab,")
    )
    assert (inv["pi5"].port, inv["pi5"].user) == (2222, "lab")
    assert inv["pi5"].board == "generic"
    local = inv["local"]
    assert (local.transport, local.board, local.python) == ("local", "local", sys.executable)
    assert local.address == "local"


def test_a_device_without_meter_gets_the_default_meter() -> None:
    inv = parse_inventory("devices:\n  a: {host: h}\n")
    assert inv["a"].meter.kind == DEFAULT_METER_KIND


def test_unknown_meter_kind_names_file_line_field_and_the_known_kinds() -> None:
    text = GOOD.replace("kind: pi5-pmic", "kind: um26c")
    message = str(error_of(text))
    assert message.startswith(
        "inventory.yaml:4 devices.pi5.meter.kind: unknown meter kind 'um26c' (known: "
    )
    for kind in agent.meters.KNOWN_METER_KINDS:
        assert kind in message
    assert "did you mean" in message


def test_meter_kinds_come_from_the_agent_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent.meters, "KNOWN_METER_KINDS", ("only-this",))
    assert "unknown meter kind 'um25c' (known: only-this)" in str(error_of(GOOD))


def test_errors_on_block_style_files_point_at_the_right_lines() -> None:
    text = (ROOT / "inventory.yaml").read_text()
    lines = text.splitlines()
    bad = text.replace("    board: raspberrypi5", "    board: raspberrypi6").replace(
        "  port: 22", "  port: '22'"
    )
    message = str(error_of(bad))
    board_line = lines.index("    board: raspberrypi5") + 1
    port_line = lines.index("  port: 22") + 1
    assert f"inventory.yaml:{board_line} devices.pi5.board: unknown board 'raspberrypi6'" in message
    assert "(did you mean 'raspberrypi5'?)" in message
    assert f"inventory.yaml:{port_line} defaults.port: " in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "devices:\n  a: {hots: h}\n",
            "inventory.yaml:2 devices.a.hots: unknown field 'hots' (did you mean 'host'?)",
        ),
        (
            "devices:\n  a: {host: h}\ndevics: {}\n",
            "inventory.yaml:3 devics: unknown field 'devics' (did you mean 'devices'?)",
        ),
        (
            "devices:\n  a:\n    host: h\n    port: 70000\n",
            "inventory.yaml:4 devices.a.port: port 70000 is not in 1-65535",
        ),
        (
            "devices:\n  a: {host: h, transport: telnet}\n",
            "inventory.yaml:2 devices.a.transport: unknown transport 'telnet'",
        ),
        (
            "devices:\n  a: {port: 22}\n",
            "inventory.yaml:2 devices.a: an ssh device needs a `host:`",
        ),
        (
            "devices:\n  a: {host: h}\ngroups:\n  g: [a,\n      b]\n",
            "inventory.yaml:5 groups.g.1: unknown device 'b' (devices: a)",
        ),
        ("devices:\n  a: {host: h}\n  a: {host: k}\n", "inventory.yaml:3 devices.a: duplicate key"),
        ("devices:\n  all: {host: h}\n", "inventory.yaml:2 devices.all: device name 'all'"),
        ("devices:\n  a: {host: h, tags: lab}\n", "inventory.yaml:2 devices.a.tags: "),
        ("devices: {}\n", "inventory.yaml:1 devices: at least one device is required"),
        ("defaults: {user: pi}\n", "inventory.yaml:1 devices: required field is missing"),
        ("devices:\n  a: {host: h\n", "inventory.yaml:3: invalid YAML"),
        ("", "inventory.yaml:1: the inventory must be a mapping"),
        ("- a\n- b\n", "inventory.yaml:1: the inventory must be a mapping"),
    ],
)
def test_invalid_inventories_say_where_and_what(text: str, expected: str) -> None:
    err = error_of(text)
    assert expected in str(err)
    assert err.hint


def test_every_problem_is_reported_at_once() -> None:
    message = str(error_of("devices:\n  a: {host: h, port: x}\n  b: {host: h, board: pi}\n"))
    assert "devices.a.port" in message and "devices.b.board" in message


def test_braces_in_values_are_not_templates() -> None:
    assert "unknown board '{board}'" in str(
        error_of("devices:\n  a: {host: h, board: '{board}'}\n")
    )


def test_missing_file_and_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InventoryError, match="inventory file not found") as info:
        load_inventory(tmp_path / "nope.yaml")
    assert INVENTORY_ENV in (info.value.hint or "")
    monkeypatch.delenv(INVENTORY_ENV, raising=False)
    assert resolve_inventory_path(None) == Path("inventory.yaml")
    monkeypatch.setenv(INVENTORY_ENV, str(tmp_path / "env.yaml"))
    assert resolve_inventory_path(None) == tmp_path / "env.yaml"
    assert resolve_inventory_path(tmp_path / "flag.yaml") == tmp_path / "flag.yaml"
    (tmp_path / "env.yaml").write_text(GOOD)
    assert "pi4" in load_inventory().devices


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_never_gives_a_traceback(text: str) -> None:
    try:
        parse_inventory(text)
    except InventoryError:
        pass


_KEYS = st.sampled_from(
    [
        "defaults",
        "devices",
        "groups",
        "host",
        "port",
        "user",
        "tags",
        "meter",
        "kind",
        "board",
        "transport",
        "python",
        "workdir",
        "identity_file",
        "known_hosts",
        "pi4",
        "lab",
        "all",
        "x",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["um25c", "ssh", "local", "raspberrypi4", "pi4", "lab"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _VALUES, max_size=4))
def test_structured_yaml_never_gives_a_traceback(doc: dict) -> None:
    try:
        inv = parse_inventory(yaml.safe_dump(doc))
    except InventoryError as exc:
        assert str(exc).startswith("inventory.yaml:")
    else:
        assert inv.devices


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="{}[]:,-#&*!|>'\"%@` \n\tabc01", max_size=120))
def test_yaml_syntax_soup_never_gives_a_traceback(text: str) -> None:
    try:
        parse_inventory(GOOD + text)
    except InventoryError:
        pass


def test_labgrid_places_take_the_coordinator_from_defaults() -> None:
    inv = parse_inventory(
        "defaults: {labgrid: {coordinator: 'lab.example:20408'}}\n"
        "devices:\n"
        "  a: {host: a.local, labgrid: {place: pi4-03}}\n"
        "  b: {host: b.local, labgrid: {place: pi5-01, coordinator: '127.0.0.1:1'}}\n"
        "  c: {host: c.local}\n"
    )
    assert (inv["a"].lab_place, inv["a"].lab_coordinator) == ("pi4-03", "lab.example:20408")
    assert (inv["b"].lab_place, inv["b"].lab_coordinator) == ("pi5-01", "127.0.0.1:1")
    assert inv["c"].lab_place is None  # a device without a place is not booked


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "devices:\n  a: {host: a.local, labgrid: {coordinator: 'x:1'}}\n",
            "inventory.yaml:2 devices.a.labgrid: labgrid needs a `place:` to book",
        ),
        (
            "devices:\n  a: {host: a.local, labgrid: {plase: p}}\n",
            "devices.a.labgrid.plase: unknown field 'plase' (did you mean 'place'?) "
            "(known: place, coordinator)",
        ),
    ],
)
def test_bad_labgrid_entries_say_where(text: str, expected: str) -> None:
    assert expected in str(error_of(text))
