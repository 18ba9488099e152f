"""The PostgreSQL feed cursor: a transaction that commits late is never skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from conftest import drop_postgres_schema, unique_schema
from runstate import RunEventInput, open_store
from runstate.adapters.postgres import PostgresStore
from runstate.testing.contract import bootstrap_input, new_run_id

pytestmark = pytest.mark.postgres


@pytest.fixture
async def schema_and_store(postgres_url: str) -> AsyncIterator[tuple[str, PostgresStore]]:
    """A store on a fresh schema, dropped afterwards."""
    schema = unique_schema()
    opened = await open_store(postgres_url, schema=schema, pool_size=2)
    assert isinstance(opened, PostgresStore)
    try:
        yield schema, opened
    finally:
        await opened.close()
        await drop_postgres_schema(schema)


async def test_lower_position_committing_last_is_still_followed(
    postgres_url: str, schema_and_store: tuple[str, PostgresStore]
) -> None:
    schema, store = schema_and_store
    slow_run, fast_run = new_run_id(), new_run_id()
    await store.bootstrap_run_tx(bootstrap_input(slow_run))
    await store.bootstrap_run_tx(bootstrap_input(fast_run))
    cursor = await store.feed_head()

    slow = await asyncpg.connect(postgres_url, server_settings={"search_path": schema})
    try:
        transaction = slow.transaction()
        await transaction.start()
        # The slow writer draws the lower position first and holds its transaction open.
        slow_position = await slow.fetchval(
            "INSERT INTO run_events (run_id, seq, event_id, type, payload, schema_version,"
            " recorded_at) VALUES ($1, 2, 'slow', 'Slow', '{}', 1, now()) RETURNING position",
            slow_run,
        )
        result = await store.append_and_enqueue_tx(fast_run, [RunEventInput(type="Fast")])
        (fast_event,) = result.appended
        assert fast_event.position > slow_position

        # The higher position committed first, but the feed holds it back.
        page = await store.read_feed(cursor=cursor)
        assert page.events == ()
        cursor = page.cursor

        await transaction.commit()
    finally:
        await slow.close()

    page = await store.read_feed(cursor=cursor)
    assert [(e.run_id, e.type) for e in page.events] == [(slow_run, "Slow"), (fast_run, "Fast")]
    assert (await store.read_feed(cursor=page.cursor)).events == ()
