"""The per-run summary on the SQL adapters: the SQL lifecycle tables mirror the Python one,
the migrations fill the summary of runs stored before them as the projector would, and the
first page of one status is an index range scan."""

from __future__ import annotations

import json
import random
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import POSTGRES_URL, drop_postgres_schema, unique_schema
from runstate import open_store
from runstate.adapters._catalog import check_run_query
from runstate.adapters._sql import load_migrations
from runstate.adapters.postgres._query import query_sql
from runstate.adapters.sqlite._migrate import split_statements
from runstate.engine import project
from runstate.engine.lifecycle import BUILTIN_EVENT_TYPES, NEXT_STATUS, TERMINAL_STATUSES
from runstate.types import RunEventPersisted, RunFilter, RunMetadata

_EXPECTED_TABLE = {
    (status.value, event_type, to.value, to in TERMINAL_STATUSES)
    for (status, event_type), to in NEXT_STATUS.items()
}
_TYPES = [*sorted(BUILTIN_EVENT_TYPES), "Custom", "RunStarted", "RunStarted"]
_BASE = datetime(2029, 3, 1, tzinfo=UTC)


def _random_logs(count: int, seed: int) -> list[tuple[RunMetadata, list[RunEventPersisted]]]:
    """Runs with random logs (illegal transitions included), as a store would hold them."""
    rng = random.Random(seed)
    runs = []
    position = 0
    for i in range(count):
        metadata = RunMetadata(
            run_id=f"old-{i:04d}",
            workflow=rng.choice(["a", "b"]),
            created_at=_BASE + timedelta(seconds=i),
        )
        types = ["RunQueued"] + [rng.choice(_TYPES) for _ in range(rng.randrange(12))]
        events = []
        for seq, event_type in enumerate(types, 1):
            position += 1
            recorded = _BASE + timedelta(minutes=position)
            occurred = recorded - timedelta(seconds=30) if rng.random() < 0.3 else None
            events.append(
                RunEventPersisted(
                    run_id=metadata.run_id,
                    seq=seq,
                    position=position,
                    type=event_type,
                    payload={},
                    event_id=f"e{seq}",
                    schema_version=1,
                    occurred_at=occurred,
                    recorded_at=recorded,
                )
            )
        runs.append((metadata, events))
    return runs


def _us(value: datetime | None) -> int | None:
    if value is None:
        return None
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


async def _check_against_projector(
    store: Any, runs: list[tuple[RunMetadata, list[RunEventPersisted]]]
) -> None:
    page = await store.query_runs(RunFilter(run_id_prefix="old-"), limit=1000)
    summaries = {s.metadata.run_id: s for s in page.runs}
    assert len(summaries) == len(runs)
    for metadata, events in runs:
        state = project(metadata, events)
        summary = summaries[metadata.run_id]
        assert (summary.status, summary.attempt, summary.last_seq) == (
            state.status,
            state.attempt,
            state.last_seq,
        ), metadata.run_id
        assert summary.updated_at == state.updated_at
        assert (summary.started_at, summary.finished_at) == (state.started_at, state.finished_at)


# -- SQLite ----------------------------------------------------------------------------------


def _sqlite_v1(path: Path, runs: list[tuple[RunMetadata, list[RunEventPersisted]]]) -> None:
    (first,) = [m for m in load_migrations("sqlite") if m.version == 1]
    with closing(sqlite3.connect(path)) as connection, connection:
        for statement in split_statements(first.sql):
            connection.execute(statement)
        connection.execute("INSERT INTO runstate_schema_version VALUES (1, ?, 0)", (first.name,))
        for metadata, events in runs:
            connection.execute(
                "INSERT INTO runstate_runs VALUES (?, ?, NULL, NULL, NULL, 'null', '{}', ?, 1, ?)",
                (metadata.run_id, metadata.workflow, _us(metadata.created_at), len(events)),
            )
            for e in events:
                connection.execute(
                    "INSERT INTO runstate_events VALUES (?, ?, ?, ?, ?, '{}', 1, ?, ?)",
                    (
                        e.position,
                        e.run_id,
                        e.seq,
                        e.event_id,
                        e.type,
                        _us(e.occurred_at),
                        _us(e.recorded_at),
                    ),
                )
                connection.execute(
                    "INSERT INTO runstate_outbox (outbox_id, run_id, seq) VALUES (?, ?, ?)",
                    (e.position, e.run_id, e.seq),
                )


async def test_sqlite_migration_backfills_summaries_as_the_projector(tmp_path: Path) -> None:
    runs = _random_logs(150, seed=3)
    path = tmp_path / "v1.db"
    _sqlite_v1(path, runs)
    async with open_store(f"sqlite:///{path}") as store:
        await _check_against_projector(store, runs)


async def test_sqlite_lifecycle_table_is_the_python_one(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    async with open_store(f"sqlite:///{path}"):
        pass
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT * FROM runstate_lifecycle").fetchall()
    assert {(a, b, c, bool(d)) for a, b, c, d in rows} == _EXPECTED_TABLE
    assert len(rows) == len(_EXPECTED_TABLE)


async def test_sqlite_first_page_of_a_status_is_an_index_range_scan(tmp_path: Path) -> None:
    path = tmp_path / "plan.db"
    async with open_store(f"sqlite:///{path}"):
        pass
    with closing(sqlite3.connect(path)) as connection:
        plan = connection.execute(
            "EXPLAIN QUERY PLAN SELECT run_id FROM runstate_runs AS r WHERE r.status = ? "
            "ORDER BY r.created_at DESC, r.run_id DESC LIMIT 51",
            ("RUNNING",),
        ).fetchall()
    details = " | ".join(row[-1] for row in plan)
    assert "runstate_runs_status_created" in details
    assert "TEMP B-TREE" not in details


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture
async def pg_admin() -> Any:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        yield connection
    finally:
        await connection.close()


async def _postgres_before_summaries(
    admin: Any, schema: str, runs: list[tuple[RunMetadata, list[RunEventPersisted]]]
) -> None:
    async with admin.transaction():
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        await admin.execute("SELECT set_config('search_path', $1, true)", f'"{schema}"')
        await admin.execute(
            "CREATE TABLE runstate_schema_version (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in load_migrations("postgres"):
            if migration.version >= 9:
                break
            await admin.execute(migration.sql)
            await admin.execute(
                "INSERT INTO runstate_schema_version (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
        await admin.executemany(
            "INSERT INTO run_metadata (run_id, workflow, input, labels, created_at,"
            " schema_version, last_seq) VALUES ($1, $2, 'null', '{}', $3, 1, $4)",
            [(m.run_id, m.workflow, m.created_at, len(events)) for m, events in runs],
        )
        await admin.executemany(
            "INSERT INTO run_events (run_id, seq, event_id, type, payload, schema_version,"
            " occurred_at, recorded_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $7)",
            [
                (e.run_id, e.seq, e.event_id, e.type, json.dumps({}), e.occurred_at, e.recorded_at)
                for _, events in runs
                for e in events
            ],
        )


@pytest.mark.postgres
async def test_postgres_migration_backfills_summaries_as_the_projector(pg_admin: Any) -> None:
    runs = _random_logs(150, seed=4)
    schema = unique_schema()
    try:
        await _postgres_before_summaries(pg_admin, schema, runs)
        async with open_store(POSTGRES_URL, schema=schema, pool_size=2) as store:
            await _check_against_projector(store, runs)
            rows = await pg_admin.fetch(f'SELECT * FROM "{schema}".runstate_lifecycle')  # noqa: S608
        assert {tuple(row) for row in rows} == _EXPECTED_TABLE
        assert len(rows) == len(_EXPECTED_TABLE)
    finally:
        await drop_postgres_schema(schema)


@pytest.mark.postgres
async def test_postgres_first_page_of_a_status_is_an_index_range_scan(pg_admin: Any) -> None:
    schema = unique_schema()
    try:
        async with open_store(POSTGRES_URL, schema=schema, pool_size=1):
            pass
        query = check_run_query(
            RunFilter(statuses=frozenset({"RUNNING"})), "created_at", True, 50, None
        )
        sql, params = query_sql(schema, query)
        async with pg_admin.transaction():
            # A tiny table would be scanned whole (or bitmap-scanned and sorted); the plan's
            # shape is what is checked: the index delivers the page in order, nothing sorts.
            await pg_admin.execute("SET LOCAL enable_seqscan = off")
            await pg_admin.execute("SET LOCAL enable_bitmapscan = off")
            plan = await pg_admin.fetch(f"EXPLAIN {sql}", *params)
        text = "\n".join(row[0] for row in plan)
        assert "run_summaries_status_created" in text
        assert "Sort" not in text
    finally:
        await drop_postgres_schema(schema)
