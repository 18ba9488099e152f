"""The PostgreSQL schema: applying the packaged migrations to one schema, safely under
concurrency, and ``runstate migrate`` for it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from ..._url import StoreUrl
from .._sql import latest_version, load_migrations, pending_migrations
from ._config import check_schema_name, parse_config, quote_ident
from ._errors import translated
from ._queries import DIALECT, Q, schema_queries


def with_schema(name: str, schema: str) -> str:
    """The named statement ``name`` with its ``{schema}`` placeholder filled, quoted."""
    return schema_queries(schema)[name]


async def applied_version(connection: Any, schema: str) -> int:
    """Return the newest migration version recorded in ``schema`` (0 when none)."""
    check_schema_name(schema)
    if not await connection.fetchval(Q["has_schema_version_table"], schema):
        return 0
    return int(await connection.fetchval(with_schema("schema_version", schema)))


async def migrate(connection: Any, schema: str) -> list[int]:
    """Bring ``schema`` to the newest version; return the versions applied (maybe none).

    Runs in one transaction under an advisory lock keyed on the schema name, so processes
    opening the same schema at once migrate it exactly once and the others wait for it.
    The transaction's search_path is pointed at the schema (the migrations name no schema),
    so it is no session state: this works through a transaction-mode pooler too.
    """
    check_schema_name(schema)
    if await applied_version(connection, schema) >= latest_version(DIALECT):
        return []
    applied: list[int] = []
    async with connection.transaction():
        await connection.execute(Q["migration_lock"], schema)
        # CREATE SCHEMA needs the database's CREATE privilege even with IF NOT EXISTS.
        if not await connection.fetchval(Q["schema_exists"], schema):
            await connection.execute(with_schema("create_schema", schema))
        await connection.execute(Q["use_schema"], quote_ident(schema))
        current = await applied_version(connection, schema)
        if current == 0 and not await connection.fetchval(Q["has_schema_version_table"], schema):
            await connection.execute(with_schema("create_schema_version_table", schema))
        for migration in pending_migrations(DIALECT, current):
            await connection.execute(migration.sql)
            await connection.execute(
                with_schema("record_migration", schema), migration.version, migration.name
            )
            applied.append(migration.version)
    return applied


class PostgresMigrator:
    """``runstate migrate`` for ``postgresql://`` stores (a ``SchemaMigrator``)."""

    def migrations(self) -> Sequence[tuple[int, str]]:
        """The ``(version, name)`` of every packaged PostgreSQL migration."""
        return [(m.version, m.name) for m in load_migrations(DIALECT)]

    async def applied_version(self, url: StoreUrl, options: Mapping[str, Any]) -> int:
        """Return the schema version of the store's schema; 0 if it has none."""
        return (await self._run(url, options, apply=False))[0]

    async def migrate(self, url: StoreUrl, options: Mapping[str, Any]) -> tuple[int, int]:
        """Bring the store's schema up to date; return its versions before and after."""
        return await self._run(url, options, apply=True)

    async def _run(
        self, url: StoreUrl, options: Mapping[str, Any], *, apply: bool
    ) -> tuple[int, int]:
        config = parse_config(url, dict(options))
        with translated(config.raw_url, "connecting", connecting=True):
            connection = await asyncpg.connect(config.dsn, **config.connect_kwargs())
        try:
            with translated(config.raw_url, "migrating", schema=config.schema):
                before = await applied_version(connection, config.schema)
                if apply:
                    await migrate(connection, config.schema)
                after = await applied_version(connection, config.schema)
        finally:
            await connection.close()
        return before, after


MIGRATOR = PostgresMigrator()
