"""``tslm-fleet lab``: the labgrid places of the fleet and of a run.

``lab places`` lists the places of the coordinator(s) the inventory names, with who
holds them; ``lab release RUN_ID`` releases the places a run still holds (after a
controller crash, without resuming it), and leaves places that others hold alone.
"""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.commands.options import DbOption, InventoryOption

CoordinatorOption = Annotated[
    str | None,
    typer.Option(
        "--coordinator",
        "-x",
        metavar="HOST:PORT",
        help="labgrid coordinator (default: those the inventory names, else $LG_COORDINATOR).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the ``lab`` command group to ``app``."""
    group = typer.Typer(
        help="Shared boards booked through a labgrid coordinator.", no_args_is_help=True
    )
    group.command("places")(places)
    group.command("release")(release)
    app.add_typer(group, name="lab")


def _coordinators(inventory: object, coordinator: str | None) -> list[str]:
    import os
    from pathlib import Path

    from orchestrator.lab.client import coordinator_address

    if coordinator:
        return [coordinator]
    found: list[str] = []
    path = Path(inventory) if inventory else None  # type: ignore[arg-type]
    if path is not None or Path("inventory.yaml").exists() or os.environ.get("TSLM_INVENTORY"):
        from orchestrator.ansible_inventory import open_inventory

        inv = open_inventory(path)
        found = [
            coordinator_address(d.lab_coordinator) for d in inv.devices.values() if d.lab_place
        ]
    return list(dict.fromkeys(found)) or [coordinator_address(None)]


def places(inventory: InventoryOption = None, coordinator: CoordinatorOption = None) -> None:
    """List the places of the coordinator(s): who holds each, and which device uses it."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from orchestrator.ansible_inventory import open_inventory
    from orchestrator.lab.client import LabClient

    devices_of: dict[str, list[str]] = {}
    if inventory is not None:
        for device in open_inventory(inventory).devices.values():
            if device.lab_place:
                devices_of.setdefault(device.lab_place, []).append(device.name)
    console = Console(highlight=False)
    for address in _coordinators(inventory, coordinator):
        with LabClient(address) as client:
            found = client.places()
            me = client.identity
        table = Table(title=f"labgrid coordinator {address} (you are {me})", title_justify="left")
        for column in ("place", "held by", "devices", "comment"):
            table.add_column(column, overflow="fold")
        for place in found:
            holder = place.holder or "-"
            if place.holder == me:
                holder += " (you)"
            cells = (place.name, holder, ", ".join(devices_of.get(place.name, [])), place.comment)
            table.add_row(*(escape(c) for c in cells))
        console.print(table)


def release(
    run_id: Annotated[
        str, typer.Argument(metavar="RUN_ID", help="The run whose places to let go.")
    ],
    db: DbOption = None,
) -> None:
    """Release the places a run still holds (after a crash, instead of --resume)."""
    from rich.console import Console
    from rich.markup import escape

    from db.store import open_store
    from orchestrator.lab.client import LabClient
    from tasks.errors import ConfigError

    console = Console(highlight=False, soft_wrap=True)
    store = open_store(db)
    try:
        if not store.run_exists(run_id):
            raise ConfigError(
                f"lab release {run_id}: no such run in the database",
                hint="`tslm-fleet runs` lists the runs",
            )
        holds = [h for h in store.holds(run_id) if h.open]
        if not holds:
            console.print(escape(f"run {run_id} holds no places"))
            return
        clients: dict[str, LabClient] = {}
        try:
            for hold in holds:
                client = clients.get(hold.coordinator) or clients.setdefault(
                    hold.coordinator, LabClient(hold.coordinator)
                )
                holder = client.holder(hold.place, sync=True)
                if client.release(hold.place):
                    store.close_hold(run_id=run_id, device=hold.device, outcome="released")
                    console.print(escape(f"{hold.device}: released place {hold.place}"))
                else:
                    store.close_hold(run_id=run_id, device=hold.device, outcome="gone")
                    console.print(
                        escape(
                            f"{hold.device}: place {hold.place} is "
                            + (f"held by {holder}" if holder else "free")
                            + ", not by this run; left as it is"
                        )
                    )
        finally:
            for client in clients.values():
                client.close()
    finally:
        store.close()
