"""The options several commands share, declared once so that they read the same everywhere.

Conventions of the command line: options are declared with ``Annotated``; ``-o/--out``
names what a command writes; ``-d/--devices`` selects devices (names, tags, groups or
``all``) and is required wherever devices are contacted; ``-f/--format`` picks an output
format; ``-v`` is kept for verbosity. Help texts are sentences: a capital letter first, a
period last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.inventory import INVENTORY_ENV

DB_HELP = "Results database URL (default: $TSLM_DB, else sqlite:///results.db in this directory)."
FORMATS = ("table", "json", "csv", "markdown")

DbOption = Annotated[str | None, typer.Option("--db", metavar="URL", help=DB_HELP)]
FormatOption = Annotated[
    str,
    typer.Option("--format", "-f", help=f"Output format: {', '.join(FORMATS)}."),
]
DevicesOption = Annotated[
    str,
    typer.Option(
        "--devices",
        "-d",
        metavar="SELECTION",
        help="Comma-separated device names, tags or groups; 'all' for every device.",
    ),
]
InventoryOption = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        "-i",
        envvar=INVENTORY_ENV,
        show_envvar=True,
        help="Inventory file or Ansible inventory (default: ./inventory.yaml).",
    ),
]
AcceptNewHostkeysOption = Annotated[
    bool,
    typer.Option(
        "--accept-new-hostkeys",
        help="On first contact, add a device's unknown host key to its known_hosts "
        "(a changed key is still refused).",
    ),
]
RunOption = Annotated[str | None, typer.Option("--run", metavar="ID", help="Only this run.")]
