"""--devices: names, tags, groups, 'all', unknown names with suggestions."""

from __future__ import annotations

import pytest

from orchestrator.inventory import parse_inventory
from orchestrator.selection import select_devices
from tasks.errors import InventoryError

INV = parse_inventory("""\
devices:
  pi4: {host: a, tags: [pi4, arm]}
  pi5: {host: b, tags: [pi5, arm, fast]}
  nuc: {host: c, tags: [x86]}
  local: {transport: local}
groups:
  lab: [pi4, pi5]
  bench: [nuc, pi4]
""")


def names(selection: str) -> list[str]:
    return [d.name for d in select_devices(INV, selection)]


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ("pi4", ["pi4"]),
        ("pi4,pi5", ["pi4", "pi5"]),
        ("pi5, pi4", ["pi4", "pi5"]),  # inventory order, spaces ignored
        ("arm", ["pi4", "pi5"]),  # tag
        ("fast", ["pi5"]),
        ("bench", ["pi4", "nuc"]),  # group, in inventory order
        ("lab,x86", ["pi4", "pi5", "nuc"]),
        ("pi4,arm,lab", ["pi4", "pi5"]),  # each device once
        ("all", ["pi4", "pi5", "nuc", "local"]),
        ("local,", ["local"]),
    ],
)
def test_selection_by_name_tag_group_and_all(selection: str, expected: list[str]) -> None:
    assert names(selection) == expected


def test_unknown_names_list_the_known_ones_with_did_you_mean() -> None:
    with pytest.raises(InventoryError) as info:
        select_devices(INV, "pi4,pi6,lba")
    err = info.value
    assert "'pi6' (did you mean 'pi" in err.message
    assert "'lba' (did you mean 'lab'?)" in err.message
    for known in ("pi4", "pi5", "nuc", "local", "arm", "x86", "lab", "bench", "all"):
        assert known in (err.hint or "")


@pytest.mark.parametrize("selection", ["", " , ,"])
def test_an_empty_selection_is_an_error(selection: str) -> None:
    with pytest.raises(InventoryError, match="no device selected"):
        select_devices(INV, selection)
