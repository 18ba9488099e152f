"""Applying the packaged PostgreSQL migrations to one schema, safely under concurrency."""

from __future__ import annotations

from typing import Any

from ..._migrations import latest_version, pending_migrations
from ._config import check_schema_name, quote_ident

DIALECT = "postgres"

_VERSION_TABLE_SQL = """
CREATE TABLE runstate_schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def applied_version(connection: Any, schema: str) -> int:
    """Return the newest migration version recorded in ``schema`` (0 when none)."""
    check_schema_name(schema)
    exists = await connection.fetchval(
        "SELECT to_regclass(format('%I.runstate_schema_version', $1::text)) IS NOT NULL", schema
    )
    if not exists:
        return 0
    version = await connection.fetchval(
        f"SELECT coalesce(max(version), 0) FROM {quote_ident(schema)}.runstate_schema_version"  # noqa: S608
    )
    return int(version)


async def migrate(connection: Any, schema: str) -> list[int]:
    """Bring ``schema`` to the newest version; return the versions applied (maybe none).

    Runs in one transaction under an advisory lock keyed on the schema name, so processes
    opening the same schema at once migrate it exactly once and the others wait for it.
    The connection's search_path is pointed at the schema for the migration's duration.
    """
    check_schema_name(schema)
    if await applied_version(connection, schema) >= latest_version(DIALECT):
        return []
    applied: list[int] = []
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('runstate.migrate.' || $1::text, 0))",
            schema,
        )
        # CREATE SCHEMA needs the database's CREATE privilege even with IF NOT EXISTS.
        if not await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema
        ):
            await connection.execute(f"CREATE SCHEMA {quote_ident(schema)}")
        await connection.execute("SELECT set_config('search_path', $1, true)", quote_ident(schema))
        current = await applied_version(connection, schema)
        if current == 0 and not await connection.fetchval(
            "SELECT to_regclass('runstate_schema_version') IS NOT NULL"
        ):
            await connection.execute(_VERSION_TABLE_SQL)
        for migration in pending_migrations(DIALECT, current):
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO runstate_schema_version (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.version)
    return applied
