"""PostgreSQL migrations: concurrent opens, versions, and agreement with schema.sql."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import drop_postgres_schema, unique_schema
from runstate import open_store
from runstate.adapters._sql import latest_version, load_migrations, load_sql
from runstate.adapters.postgres import applied_version, migrate
from runstate.testing.contract import bootstrap_input, new_run_id

pytestmark = pytest.mark.postgres

_COLUMNS = """
SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default,
       is_identity, identity_generation
  FROM information_schema.columns WHERE table_schema = $1
 ORDER BY table_name, ordinal_position
"""
_INDEXES = """
SELECT tablename, indexname, replace(indexdef, $1 || '.', 'S.')
  FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname
"""
_CONSTRAINTS = """
SELECT c.conname, c.contype,
       replace(pg_get_constraintdef(c.oid), $1 || '.', 'S.')
  FROM pg_constraint AS c JOIN pg_namespace AS n ON n.oid = c.connamespace
 WHERE n.nspname = $1 ORDER BY c.conname
"""
_STORAGE = """
SELECT c.relname, c.relkind::text, c.reloptions
  FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relkind IN ('r', 'i') ORDER BY c.relname
"""
_FUNCTIONS = """
SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
       p.prosrc, p.provolatile, replace(p.proconfig::text, $1, 'S')
  FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
 WHERE n.nspname = $1 ORDER BY p.proname
"""


async def _catalog(connection: Any, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: [tuple(row) for row in await connection.fetch(sql, schema)]
        for name, sql in (
            ("columns", _COLUMNS),
            ("indexes", _INDEXES),
            ("constraints", _CONSTRAINTS),
            ("storage", _STORAGE),
            ("functions", _FUNCTIONS),
        )
    }


async def test_migrations_and_schema_sql_produce_the_same_catalog(admin: Any) -> None:
    migrated, canonical = unique_schema(), unique_schema()
    try:
        assert await migrate(admin, migrated) == [m.version for m in load_migrations("postgres")]
        await admin.execute(f'CREATE SCHEMA "{canonical}"')
        async with admin.transaction():
            # Quoted, as migrate() sets it: the functions pin this search_path (FROM CURRENT).
            await admin.execute("SELECT set_config('search_path', $1, true)", f'"{canonical}"')
            await admin.execute(load_sql("postgres", "schema.sql"))
        got = await _catalog(admin, migrated)
        want = await _catalog(admin, canonical)
        for part in want:
            assert got[part] == want[part], part
        assert got["columns"]
        assert ("run_outbox", "r", ["fillfactor=50"]) in got["storage"]
        assert len(got["functions"]) == 7  # incl. the summary trigger and runstate_event_traces
    finally:
        await drop_postgres_schema(migrated)
        await drop_postgres_schema(canonical)


async def test_migrate_is_idempotent_and_records_versions(admin: Any) -> None:
    schema = unique_schema()
    try:
        assert await applied_version(admin, schema) == 0
        assert await migrate(admin, schema) != []
        assert await migrate(admin, schema) == []
        assert await applied_version(admin, schema) == latest_version("postgres")
        names = await admin.fetch(
            f'SELECT version, name FROM "{schema}".runstate_schema_version ORDER BY version'  # noqa: S608
        )
        assert [(r["version"], r["name"]) for r in names] == [
            (m.version, m.name) for m in load_migrations("postgres")
        ]
    finally:
        await drop_postgres_schema(schema)


async def test_concurrent_opens_of_a_fresh_schema_migrate_once(
    postgres_url: str, admin: Any
) -> None:
    import asyncio

    schema = unique_schema()
    try:
        stores = await asyncio.gather(
            *(open_store(postgres_url, schema=schema, pool_size=2) for _ in range(6))
        )
        try:
            run_id = new_run_id()
            await stores[0].bootstrap_run_tx(bootstrap_input(run_id))
            assert await stores[5].get_run_metadata_by_run_id(run_id) is not None
        finally:
            for store in stores:
                await store.close()
        count = await admin.fetchval(
            f'SELECT count(*) FROM "{schema}".runstate_schema_version'  # noqa: S608
        )
        assert count == latest_version("postgres")
    finally:
        await drop_postgres_schema(schema)


async def test_tables_stay_inside_the_chosen_schema(postgres_url: str, admin: Any) -> None:
    schema = unique_schema()
    try:
        async with open_store(f"{postgres_url}?schema={schema}&pool_size=2") as store:
            await store.bootstrap_run_tx(bootstrap_input(new_run_id()))
        tables = await admin.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        assert {r["table_name"] for r in tables} == {
            "run_metadata",
            "run_events",
            "run_outbox",
            "run_event_traces",
            "runstate_schema_version",
            "runstate_outbox_watchers",
            "run_summaries",
            "runstate_lifecycle",
            "runstate_store",
        }
    finally:
        await drop_postgres_schema(schema)
