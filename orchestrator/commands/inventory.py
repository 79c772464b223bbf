"""``tslm-fleet inventory check``: validate inventory.yaml and print the fleet table.

Also home of :func:`load_selection`, which every command that contacts devices uses to
read ``--inventory`` and ``--devices`` the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from orchestrator.commands.options import InventoryOption


def load_selection(inventory: Path | None, devices: str) -> tuple[Any, list[Any]]:
    """Load the inventory and resolve ``--devices``: (Inventory, [Device, ...])."""
    from orchestrator.inventory import load_inventory
    from orchestrator.selection import select_devices

    inv = load_inventory(inventory)
    return inv, select_devices(inv, devices)


def register(app: typer.Typer) -> None:
    """Add the ``inventory`` command group to ``app``."""
    group = typer.Typer(help="Inspect the lab's inventory.yaml.", no_args_is_help=True)
    group.command("check")(check)
    app.add_typer(group, name="inventory")


def check(inventory: InventoryOption = None) -> None:
    """Validate the inventory and print the fleet: devices, how to reach them, meters."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from orchestrator.inventory import load_inventory

    inv = load_inventory(inventory)
    table = Table(title=f"{inv.path}: {len(inv.devices)} devices", title_justify="left")
    for column in ("device", "transport", "address", "board", "tags", "meter", "python", "workdir"):
        table.add_column(column, overflow="fold")
    for device in inv.devices.values():
        meter = ", ".join(
            [device.meter.kind, *(f"{k}={v}" for k, v in device.meter.options().items())]
        )
        cells = (
            device.name,
            device.transport,
            device.address,
            device.board,
            ", ".join(device.tags),
            meter,
            device.python,
            device.workdir,
        )
        table.add_row(*(escape(c) for c in cells))
    console = Console(highlight=False, soft_wrap=False)
    console.print(table)
    for name, members in inv.groups.items():
        console.print(escape(f"group {name}: {', '.join(members)}"))
    console.print(f"[green]ok[/green]: {escape(str(inv.path))} is valid")
