"""PostgreSQL NOTIFY wake-ups, gapless positions for rejected writes, and store options."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from conftest import drop_postgres_schema, unique_schema
from runstate import (
    ConcurrencyConflict,
    InvalidInput,
    OutboxStore,
    RunAlreadyExists,
    RunEventInput,
    RunNotFound,
    open_store,
)
from runstate._url import parse_store_url
from runstate.adapters.postgres import NOTIFY_CHANNEL, PostgresStore, parse_config
from runstate.testing.contract import bootstrap_input, new_run_id

pytestmark = pytest.mark.postgres


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresStore]:
    """A store on a fresh schema, dropped afterwards."""
    schema = unique_schema()
    opened = await open_store(postgres_url, schema=schema, pool_size=3)
    assert isinstance(opened, PostgresStore)
    try:
        yield opened
    finally:
        await opened.close()
        await drop_postgres_schema(schema)


async def _listen(url: str, schema: str, *, watch: bool) -> tuple[Any, list[str]]:
    received: list[str] = []
    connection = await asyncpg.connect(url, server_settings={"search_path": schema})
    await connection.add_listener(
        NOTIFY_CHANNEL, lambda _c, _pid, _channel, payload: received.append(payload)
    )
    if watch:
        await connection.fetchval("SELECT o_claimable FROM runstate_watch()")
    return connection, received


async def _settle(connection: Any) -> None:
    # A round trip on the listening connection flushes notifications already sent to it.
    await asyncio.sleep(0.05)
    await connection.execute("SELECT 1")


async def test_one_notification_per_write_transaction_and_none_for_rejected_writes(
    postgres_url: str, store: PostgresStore
) -> None:
    connection, received = await _listen(postgres_url, store.schema, watch=True)
    try:
        await _notifications_per_write(store, connection, received)
    finally:
        await connection.close()


async def test_writes_do_not_notify_while_no_relay_waits(
    postgres_url: str, store: PostgresStore
) -> None:
    connection, received = await _listen(postgres_url, store.schema, watch=False)
    try:
        await store.bootstrap_run_tx(bootstrap_input(new_run_id()))
        await _settle(connection)
        assert received == []
        await connection.fetchval("SELECT o_claimable FROM runstate_watch()")
        await store.bootstrap_run_tx(bootstrap_input(new_run_id()))
        await _settle(connection)
        assert received == [store.schema]
        await connection.fetchval("SELECT runstate_unwatch()")
        await store.bootstrap_run_tx(bootstrap_input(new_run_id()))
        await _settle(connection)
        assert received == [store.schema]
    finally:
        await connection.close()


async def test_wait_returns_at_once_when_records_are_claimable(store: PostgresStore) -> None:
    await store.bootstrap_run_tx(bootstrap_input(new_run_id()))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await store.wait_for_outbox(10.0)
    assert loop.time() - started < 2.0


async def _notifications_per_write(
    store: PostgresStore, connection: Any, received: list[str]
) -> None:
    run_id = new_run_id()
    await store.bootstrap_run_tx(bootstrap_input(run_id, "A", "B", "C"))
    await store.append_and_enqueue_tx(run_id, [RunEventInput(type="S") for _ in range(5)])
    await _settle(connection)
    assert [p for p in received if p == store.schema] == [store.schema, store.schema]
    received.clear()
    with pytest.raises(RunAlreadyExists):
        await store.bootstrap_run_tx(bootstrap_input(run_id))
    with pytest.raises(ConcurrencyConflict):
        await store.append_and_enqueue_tx(run_id, [RunEventInput(type="S")], expected_seq=1)
    with pytest.raises(RunNotFound):
        await store.append_and_enqueue_tx(new_run_id(), [RunEventInput(type="S")])
    first = (await store.list_events(run_id))[0]
    await store.append_and_enqueue_tx(run_id, [RunEventInput(type="A", event_id=first.event_id)])
    await _settle(connection)
    assert [p for p in received if p == store.schema] == []


async def test_notify_wakes_wait_for_outbox(postgres_url: str, store: PostgresStore) -> None:
    writer = await open_store(postgres_url, schema=store.schema, pool_size=1)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await store.wait_for_outbox(0.3)
        assert loop.time() - started >= 0.25
        waiter = asyncio.create_task(store.wait_for_outbox(30.0))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        started = loop.time()
        await writer.bootstrap_run_tx(bootstrap_input(new_run_id()))
        await asyncio.wait_for(waiter, 5.0)
        assert loop.time() - started < 2.0
    finally:
        await writer.close()


async def test_notifications_of_other_schemas_do_not_wake(
    postgres_url: str, store: PostgresStore
) -> None:
    other_schema = unique_schema()
    other = await open_store(postgres_url, schema=other_schema, pool_size=1)
    try:
        waiter = asyncio.create_task(store.wait_for_outbox(0.5))
        await asyncio.sleep(0.05)
        await other.bootstrap_run_tx(bootstrap_input(new_run_id()))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await waiter
    finally:
        await other.close()
        await drop_postgres_schema(other_schema)


async def test_lost_listen_connection_wakes_waiters_and_reconnects(
    postgres_url: str, store: PostgresStore
) -> None:
    app = f"rs_listen_{uuid.uuid4().hex[:12]}"
    relay = await open_store(
        f"{postgres_url}?application_name={app}", schema=store.schema, pool_size=1
    )
    admin = await asyncpg.connect(postgres_url)
    try:
        waiter = asyncio.create_task(relay.wait_for_outbox(30.0))  # type: ignore[attr-defined]
        await asyncio.sleep(0.2)
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND query LIKE '%runstate_watch%'",
            app,
        )
        assert killed == 1
        await asyncio.wait_for(waiter, 5.0)
        waiter = asyncio.create_task(relay.wait_for_outbox(30.0))  # type: ignore[attr-defined]
        await asyncio.sleep(0.2)
        await store.bootstrap_run_tx(bootstrap_input(new_run_id()))
        await asyncio.wait_for(waiter, 5.0)
    finally:
        await admin.close()
        await relay.close()


async def test_rejected_writes_burn_no_positions(store: PostgresStore) -> None:
    run_id = new_run_id()
    first = await store.bootstrap_run_tx(bootstrap_input(run_id, "A", "B"))
    last_position = first.appended[-1].position
    with pytest.raises(RunAlreadyExists):
        await store.bootstrap_run_tx(bootstrap_input(run_id, "A", "B"))
    with pytest.raises(ConcurrencyConflict):
        await store.append_and_enqueue_tx(run_id, [RunEventInput(type="C")], expected_seq=7)
    with pytest.raises(RunNotFound):
        await store.append_and_enqueue_tx(new_run_id(), [RunEventInput(type="C")])
    dup = first.appended[0].event_id
    result = await store.append_and_enqueue_tx(
        run_id, [RunEventInput(type="A", event_id=dup), RunEventInput(type="C")]
    )
    assert result.deduplicated == (dup,)
    assert [e.position for e in result.appended] == [last_position + 1]
    other = await store.bootstrap_run_tx(bootstrap_input(new_run_id(), "X", "X2"))
    assert [e.position for e in other.appended] == [last_position + 2, last_position + 3]


async def test_outbox_interface_is_implemented(store: PostgresStore) -> None:
    assert isinstance(store, OutboxStore)
    stats = await store.outbox_stats()
    assert (stats.pending, stats.in_flight, stats.dead, stats.delivered) == (0, 0, 0, 0)
    assert stats.oldest_pending_at is None


# -- options -------------------------------------------------------------------------------


def test_url_and_keyword_options_are_merged() -> None:
    url = parse_store_url(
        "postgresql://u:pw@db:6432/app?schema=tenant_a&pool_size=3&pgbouncer=true"
        "&sslmode=disable&command_timeout=5"
    )
    config = parse_config(url, {"connect_timeout": 2})
    assert config.schema == "tenant_a"
    assert config.pool_size == 3
    assert config.statement_cache_size == 0
    assert config.command_timeout == 5.0
    assert config.connect_timeout == 2.0
    assert config.dsn == "postgresql://u:pw@db:6432/app?sslmode=disable"
    assert "pw" not in config.masked_url
    defaults = parse_config(parse_store_url("postgresql://db/app"), {})
    assert (defaults.schema, defaults.pool_size) == ("runstate", 10)
    assert parse_config(url, {"pool_size": 7}).pool_size == 7


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("pool_size=1", 1),
        ("pool_size=3", 1),
        ("pool_size=4", 2),
        ("", 2),
        ("pool_size=100", 2),
        ("write_statements=9", 9),
    ],
)
def test_write_statements_default_to_one_per_2_connections_at_most_two(
    query: str, expected: int
) -> None:
    config = parse_config(parse_store_url(f"postgresql://db/app?{query}"), {})
    assert config.write_statements == expected


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("postgresql://db/app", {"poolsize": 3}, "supported: .*pool_size"),
        ("postgresql://db/app?frobnicate=1", {}, "frobnicate"),
        ("postgresql://db/app", {"schema": 'x"; DROP SCHEMA public; --'}, "schema"),
        ("postgresql://db/app?schema=Upper", {}, "schema"),
        ("postgresql://db/app?pool_size=0", {}, "pool_size"),
        ("postgresql://db/app?pgbouncer=maybe", {}, "pgbouncer"),
        ("postgresql://db/app?write_statements=0", {}, "write_statements"),
        ("postgresql://db/app", {"max_payload_bytes": -1}, "max_payload_bytes"),
    ],
)
async def test_bad_options_are_invalid_input(url: str, options: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        await open_store(url, **options)
