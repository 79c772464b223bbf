"""``tslm-fleet tasks``: the registered workloads, their parameters and descriptions."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def _default_text(value: object) -> str:
    return "None" if value is None else json.dumps(value) if isinstance(value, str) else str(value)


def register(app: typer.Typer) -> None:
    """Add the ``tasks`` command to the CLI."""

    @app.command("tasks")
    def tasks_command(
        as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
    ) -> None:
        """List the workloads (--task NAME) with their parameters."""
        from tasks.workloads import list_tasks

        infos = list_tasks()
        if as_json:
            typer.echo(
                json.dumps(
                    [
                        {
                            "name": i.name,
                            "description": i.description,
                            "parameters": [
                                {
                                    "name": p.name,
                                    "type": p.type_name,
                                    "default": p.default,
                                    "help": p.help,
                                }
                                for p in i.parameters
                            ],
                        }
                        for i in infos
                    ],
                    indent=2,
                )
            )
            return

        from rich.console import Console
        from rich.table import Table

        console = Console(highlight=False)
        for info in infos:
            table = Table(
                title=f"[bold]{info.name}[/]: {info.description}",
                title_justify="left",
                show_edge=False,
                pad_edge=False,
            )
            for column in ("parameter", "type", "default", "meaning"):
                table.add_column(column, overflow="fold")
            for p in info.parameters:
                table.add_row(p.name, p.type_name, _default_text(p.default), p.help)
            console.print(table)
            console.print()
