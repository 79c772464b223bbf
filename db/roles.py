"""PostgreSQL roles for ``tslm-fleet query``: refuse one that can write, make one that cannot.

A read-only transaction is not enough on its own: a superuser can still run
``COPY ... TO PROGRAM`` or ``lo_export`` inside one, and a session that only did
``SET ROLE reader`` can ``RESET ROLE``. So ``query`` checks the *session* user (the one
that logged in, which no ``SET ROLE`` or ``RESET ROLE`` changes) and every role it is a
member of, and runs only when none of them is a superuser, holds a dangerous predefined
role, may execute a server-file function, owns or may write a table, or may create
objects. ``tslm-fleet db create-reader`` makes a login role that passes.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import Connection, Engine

from db.errors import DatabaseError, UnsafeRoleError, map_driver_error

#: predefined roles that reach the server's files, programs or other sessions, or write
DANGEROUS_ROLES = (
    "pg_execute_server_program",
    "pg_write_server_files",
    "pg_read_server_files",
    "pg_signal_backend",
    "pg_write_all_data",
)
#: server-side functions that read or write the server's files
FILE_FUNCTIONS = (
    "lo_export(oid, text)",
    "lo_import(text)",
    "lo_import(text, oid)",
    "pg_read_file(text)",
    "pg_read_binary_file(text)",
    "pg_ls_dir(text)",
)
_ROLE_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_PROBLEMS_SQL = f"""
WITH member_of AS (
    SELECT r.oid, r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls,
           r.rolreplication
    FROM pg_roles r
    WHERE pg_has_role(%(role)s::name, r.oid, 'MEMBER')
), user_tables AS (
    SELECT c.oid, c.relname, c.relowner
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND left(n.nspname, 8) <> 'pg_toast'
)
SELECT rolname, 'is a superuser' FROM member_of WHERE rolsuper
UNION ALL SELECT rolname, 'can create roles' FROM member_of WHERE rolcreaterole
UNION ALL SELECT rolname, 'can create databases' FROM member_of WHERE rolcreatedb
UNION ALL SELECT rolname, 'bypasses row security' FROM member_of WHERE rolbypassrls
UNION ALL SELECT rolname, 'can replicate' FROM member_of WHERE rolreplication
UNION ALL SELECT rolname, 'is the predefined role ' || rolname FROM member_of
    WHERE rolname IN ({", ".join(f"'{r}'" for r in DANGEROUS_ROLES)})
UNION ALL SELECT m.rolname, 'may execute ' || f.sig FROM member_of m,
    (VALUES {", ".join(f"('{f}')" for f in FILE_FUNCTIONS)}) AS f(sig)
    WHERE to_regprocedure(f.sig) IS NOT NULL
      AND has_function_privilege(m.oid, to_regprocedure(f.sig), 'EXECUTE')
UNION ALL SELECT m.rolname, 'owns table ' || t.relname FROM member_of m
    JOIN user_tables t ON t.relowner = m.oid
UNION ALL SELECT m.rolname, 'may write table ' || t.relname FROM member_of m, user_tables t
    WHERE has_table_privilege(m.oid, t.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
UNION ALL SELECT m.rolname, 'may create objects in schema ' || n.nspname
    FROM member_of m, pg_namespace n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND left(n.nspname, 3) <> 'pg_'
      AND has_schema_privilege(m.oid, n.oid, 'CREATE')
UNION ALL SELECT m.rolname, 'may create schemas in the database' FROM member_of m
    WHERE has_database_privilege(m.oid, current_database(), 'CREATE')
"""


def role_problems(conn: Connection, role: str | None = None) -> tuple[str, list[str]]:
    """(role, what makes it unfit for read-only queries; empty when it is fit).

    ``role`` defaults to the session user: the role that logged in, whatever ``SET ROLE``
    did since.
    """
    user = role or str(conn.exec_driver_sql("SELECT session_user").scalar())
    rows = conn.exec_driver_sql(_PROBLEMS_SQL, {"role": user}).all()
    problems = [
        reason if role == user else f"is a member of {role}, which {reason}"
        for role, reason in rows
    ]
    return user, list(dict.fromkeys(problems))


def require_reader(conn: Connection) -> None:
    """Raise :class:`UnsafeRoleError` unless the session user can only read."""
    user, problems = role_problems(conn)
    if not problems:
        return
    shown = "; ".join(problems[:5]) + (
        f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    )
    raise UnsafeRoleError(
        f"`query` refuses to run as PostgreSQL role {user!r}: it {shown}. A read-only "
        "transaction does not stop such a role (COPY ... TO PROGRAM, lo_export, RESET ROLE)",
        hint="create a read-only login role once with `tslm-fleet db create-reader NAME "
        "--db ADMIN_URL`, then query with --db postgresql+psycopg://NAME@HOST/DB "
        "(or set TSLM_QUERY_DB)",
    )


def create_reader(engine: Engine, name: str, password: str | None = None) -> list[str]:
    """Create login role ``name`` that can read this database's tables and nothing else.

    Returns the statements run (the password shown as ``***``). The role gets SELECT on
    every table of schema ``public`` now, and on the tables the schema's owner creates
    later (default privileges), and ``default_transaction_read_only``.
    """
    if not _ROLE_NAME_RE.match(name):
        raise DatabaseError(
            f"role name {name!r} is not valid here",
            hint="use 1-63 lower-case letters, digits or '_', starting with a letter or '_'",
        )
    if engine.dialect.name != "postgresql":
        raise DatabaseError(
            f"create-reader is for PostgreSQL; {engine.dialect.name} needs no reader role",
            hint="SQLite databases are opened read-only by `tslm-fleet query` itself",
        )
    try:
        return _create_reader(engine, name, password)
    except engine.dialect.loaded_dbapi.Error as exc:
        raise map_driver_error(exc, "create-reader") from exc


def _create_reader(engine: Engine, name: str, password: str | None) -> list[str]:
    from psycopg import sql

    role = sql.Identifier(name)
    with engine.connect() as conn:
        exists = conn.exec_driver_sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).scalar()
        if exists:
            raise DatabaseError(
                f"PostgreSQL role {name!r} exists already",
                hint="pick another name, or drop it first (DROP ROLE) if it is yours",
            )
        database = str(conn.exec_driver_sql("SELECT current_database()").scalar())
        owner = conn.exec_driver_sql(
            "SELECT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname = "
            "'alembic_version'"
        ).scalar()
        statements: list[tuple[Any, str]] = [
            (
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                    "NOBYPASSRLS NOINHERIT"
                ).format(role)
                + (
                    sql.SQL(" PASSWORD {}").format(sql.Literal(password))
                    if password
                    else sql.SQL("")
                ),
                f"CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                "NOBYPASSRLS NOINHERIT" + (" PASSWORD ***" if password else ""),
            ),
            (sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role), None),
            (
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(database), role
                ),
                None,
            ),
            (sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role), None),
            (sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(role), None),
        ]
        if owner:
            statements.append(
                (
                    sql.SQL(
                        "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public "
                        "GRANT SELECT ON TABLES TO {}"
                    ).format(sql.Identifier(str(owner)), role),
                    None,
                )
            )
        raw = conn.connection.driver_connection
        shown: list[str] = []
        with raw.cursor() as cursor:
            for statement, display in statements:
                cursor.execute(statement)
                shown.append(display or statement.as_string(raw))
        conn.commit()
        _, problems = role_problems(conn, name)
    if problems:
        raise DatabaseError(
            f"role {name!r} was created but it still {'; '.join(problems)}",
            hint="on PostgreSQL before 15 every role may create in schema public: "
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        )
    return shown
