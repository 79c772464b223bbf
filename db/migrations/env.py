"""Alembic environment of the results database.

Normally run through :func:`db.engine.upgrade`, which passes an open connection (inside
one transaction) in ``config.attributes["connection"]``. Offline mode (``--sql``) renders
the SQL for the URL in the configuration instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from db.schema import metadata

config = context.config
# batch mode lets later migrations alter SQLite tables (which lack most ALTER forms)
OPTIONS = {"target_metadata": metadata, "render_as_batch": True, "compare_type": True}


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, transactional_ddl=True, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, transactional_ddl=True, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
