"""``tslm-fleet inventory check``: validate inventory.yaml and print the fleet table.

Also home of :func:`load_selection`, which every command that contacts devices uses to
read ``--inventory`` and ``--devices`` the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.commands.options import InventoryOption


def load_selection(inventory: Path | None, devices: str) -> tuple[Any, list[Any]]:
    """Load the inventory and resolve ``--devices``: (Inventory, [Device, ...])."""
    from orchestrator.ansible_inventory import open_inventory
    from orchestrator.selection import select_devices

    inv = open_inventory(inventory)
    return inv, select_devices(inv, devices)


def register(app: typer.Typer) -> None:
    """Add the ``inventory`` command group to ``app``."""
    group = typer.Typer(help="Inspect the lab's inventory.yaml.", no_args_is_help=True)
    group.command("check")(check)
    imports = typer.Typer(
        help="Convert another inventory format to inventory.yaml.", no_args_is_help=True
    )
    imports.command("ansible")(import_ansible)
    group.add_typer(imports, name="import")
    app.add_typer(group, name="inventory")


def import_ansible(
    source: Annotated[
        Path, typer.Argument(help="Ansible inventory: a YAML or INI file, or a directory.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The inventory.yaml to write.")] = Path(
        "inventory.yaml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Write the native inventory.yaml of an Ansible inventory (read by ansible-core)."""
    from rich.console import Console
    from rich.markup import escape

    from orchestrator.ansible_inventory import native_yaml
    from orchestrator.inventory import parse_inventory
    from tasks.errors import InventoryError

    if not source.exists():
        raise InventoryError(f"{source}: no such Ansible inventory (file or directory)")
    if out.exists() and not force:
        raise InventoryError(f"{out}: exists already", hint="pass --force to overwrite it")
    text = native_yaml(source)
    inv = parse_inventory(text, str(out), path=out)  # what is written reads back the same
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    Console(highlight=False).print(
        escape(f"wrote {out}: {len(inv.devices)} devices, {len(inv.groups)} groups (from {source})")
    )


def check(inventory: InventoryOption = None) -> None:
    """Validate the inventory and print the fleet: devices, how to reach them, meters."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from orchestrator.ansible_inventory import open_inventory

    inv = open_inventory(inventory)
    table = Table(title=f"{inv.path}: {len(inv.devices)} devices", title_justify="left")
    places = any(d.lab_place for d in inv.devices.values())
    columns = ["device", "transport", "address", "board", "tags", "meter", "python", "workdir"]
    for column in [*columns, *(["labgrid place"] if places else [])]:
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
        if places:
            cells += (device.lab_place or "-",)
        table.add_row(*(escape(c) for c in cells))
    console = Console(highlight=False, soft_wrap=False)
    console.print(table)
    for name, members in inv.groups.items():
        console.print(escape(f"group {name}: {', '.join(members)}"))
    console.print(f"[green]ok[/green]: {escape(str(inv.path))} is valid")
