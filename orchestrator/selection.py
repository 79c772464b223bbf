"""``--devices`` selections: comma-separated device names, tags and group names.

``all`` selects every device. A word may be a device name, a tag and a group name at the
same time (the example inventory tags device ``pi4`` with ``pi4``): the selection is the
union of everything it names, in inventory order, each device once.
"""

from __future__ import annotations

import difflib

from orchestrator.inventory import ALL, Device, Inventory
from tasks.errors import InventoryError


def select_devices(inventory: Inventory, selection: str) -> list[Device]:
    """Devices named by ``selection`` (e.g. ``"pi4,lab"`` or ``"all"``), in inventory order.

    Unknown words raise :class:`InventoryError` listing the known device names, tags and
    groups, with the closest match.
    """
    words = [w.strip() for w in selection.split(",") if w.strip()]
    if not words:
        raise InventoryError(
            "--devices: no device selected",
            hint=f"name devices, tags or groups: {_known_text(inventory)}",
        )
    tags = inventory.tags
    chosen: set[str] = set()
    unknown: list[str] = []
    for word in words:
        names: set[str] = set()
        if word == ALL:
            names.update(inventory.devices)
        if word in inventory.devices:
            names.add(word)
        names.update(tags.get(word, ()))
        names.update(inventory.groups.get(word, ()))
        if not names:
            unknown.append(word)
        chosen |= names
    if unknown:
        candidates = [*inventory.devices, *tags, *inventory.groups, ALL]
        parts = []
        for word in unknown:
            close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
            parts.append(f"{word!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise InventoryError(
            f"{inventory.path}: --devices names unknown device, tag or group {', '.join(parts)}",
            hint=f"known: {_known_text(inventory)}",
        )
    return [device for name, device in inventory.devices.items() if name in chosen]


def _known_text(inventory: Inventory) -> str:
    parts = [f"devices {', '.join(inventory.devices)}"]
    if inventory.tags:
        parts.append(f"tags {', '.join(inventory.tags)}")
    if inventory.groups:
        parts.append(f"groups {', '.join(inventory.groups)}")
    parts.append(f"or '{ALL}'")
    return "; ".join(parts)
