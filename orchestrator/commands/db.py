"""``tslm-fleet db``: where the results database is and which schema revision it has.

``db upgrade`` applies the migrations shipped with this version (they also run by
themselves the first time a run writes to a database); ``db current`` prints the
database's revision; ``db path`` prints the resolved URL (and the SQLite file);
``db create-reader NAME`` makes a PostgreSQL login role that can only read, the kind of
role ``tslm-fleet query`` insists on.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from orchestrator.commands.options import DbOption


def register(app: typer.Typer) -> None:
    """Add the ``db`` command group to the CLI."""
    group = typer.Typer(
        help="The results database: schema upgrades, revision, location.", no_args_is_help=True
    )
    app.add_typer(group, name="db")
    group.command("upgrade")(upgrade_cmd)
    group.command("current")(current_cmd)
    group.command("path")(path_cmd)
    group.command("create-reader")(create_reader_cmd)


def upgrade_cmd(
    revision: Annotated[str, typer.Option("--revision", help="Target revision.")] = "head",
    db: DbOption = None,
) -> None:
    """Create or migrate the results database schema."""
    from db.engine import make_engine, upgrade
    from db.urls import display_url, resolve_url

    url = resolve_url(db)
    engine = make_engine(url)
    try:
        before, after = upgrade(engine, revision, announce=lambda m: typer.echo(m, err=True))
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"{display_url(url)} is already at revision {after}")
    else:
        typer.echo(f"{display_url(url)}: revision {before or '(empty)'} -> {after}")


def current_cmd(db: DbOption = None) -> None:
    """Print the schema revision of the database (and whether it is the newest)."""
    from db.engine import current_revision, head_revision, make_engine
    from db.urls import resolve_url

    url = resolve_url(db)
    engine = make_engine(url, read_only=True)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    if current is None:
        typer.echo(f"(empty) — run `tslm-fleet db upgrade` to create revision {head}")
    elif current == head:
        typer.echo(f"{current} (head)")
    else:
        typer.echo(f"{current} (this tslm-fleet needs {head}: run `tslm-fleet db upgrade`)")


def path_cmd(db: DbOption = None) -> None:
    """Print the resolved database URL (password hidden) and the SQLite file."""
    from db.urls import display_url, resolve_url, sqlite_path

    url = resolve_url(db)
    typer.echo(display_url(url))
    path = sqlite_path(url)
    if path is not None:
        typer.echo(f"file: {path}" + ("" if path.exists() else " (not created yet)"))


def create_reader_cmd(
    name: Annotated[str, typer.Argument(help="Name of the new login role.")],
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env",
            metavar="VAR",
            help="Environment variable holding the role's password (none: the server's "
            "other authentication, e.g. peer or certificates).",
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Create a PostgreSQL login role that can read the results and nothing else.

    Run it with an administrator's URL (--db or $TSLM_DB); then point
    `tslm-fleet query` at the new role with --db or $TSLM_QUERY_DB.
    """
    from db.engine import make_engine
    from db.errors import DatabaseError
    from db.roles import create_reader
    from db.urls import display_url, parse_url, resolve_url

    password = None
    if password_env is not None:
        password = os.environ.get(password_env)
        if not password:
            raise DatabaseError(
                f"--password-env {password_env}: that environment variable is not set",
                hint=f"export {password_env}=... first (the password never goes on the "
                "command line)",
            )
    url = resolve_url(db)
    engine = make_engine(url)
    try:
        statements = create_reader(engine, name, password)
    finally:
        engine.dispose()
    for statement in statements:
        typer.echo(statement)
    reader = parse_url(url).set(username=name, password=None)
    typer.echo(
        f"role {name} created on {display_url(url)}; query with:\n"
        f"  export TSLM_QUERY_DB='{reader.render_as_string(hide_password=True)}'"
    )
