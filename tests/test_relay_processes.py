"""Three `runstate relay` processes on one store: every event once per lease, in per-run order.

The consumer is a Redis stream, which keeps every entry (no deduplication), so redeliveries
after a SIGKILL show up there and are checked to be exact re-sends under the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from _processes import RelayProcess, start_relay
from conftest import POSTGRES_URL, drop_postgres_schema, require_service, unique_schema
from runstate import RunBootstrapInput, RunEventInput, RunMetadata, open_store
from runstate.store import OutboxStore

RUNS = 200
EVENTS_PER_RUN = 15
BATCH = 5
WORKERS = 2
LEASE = 2.0

pytestmark = pytest.mark.slow


@pytest.fixture(params=["postgres", "sqlite"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh store of each kind the relay processes can share."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    schema = unique_schema()
    yield f"{POSTGRES_URL}?schema={schema}"
    await drop_postgres_schema(schema)


@pytest.fixture
async def redis_stream() -> AsyncIterator[tuple[str, Any]]:
    """A Redis stream key of this test's own, and a client; deleted afterwards."""
    require_service("Redis", "127.0.0.1", 6379)
    import redis.asyncio

    key = f"rs-test:relays:{uuid.uuid4().hex[:12]}"
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        yield key, client
    finally:
        await client.delete(key)
        await client.aclose()


async def _bootstrap_all(store: Any) -> None:
    """Every run starts with one event."""
    await asyncio.gather(
        *(
            store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=f"run-{i:03d}", workflow="scale"),
                    first_events=[RunEventInput(type="Step", payload={"n": 1})],
                )
            )
            for i in range(RUNS)
        )
    )


async def _append_round(store: Any, n: int) -> None:
    """Event ``n`` of every run, written at once: a backlog of RUNS records for the relays."""
    await asyncio.gather(
        *(
            store.append_and_enqueue_tx(
                f"run-{i:03d}", [RunEventInput(type="Step", payload={"n": n})]
            )
            for i in range(RUNS)
        )
    )


async def _entries(client: Any, key: str) -> list[dict[str, Any]]:
    rows = await client.xrange(key)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]


async def _wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_three_relays_divide_the_work_and_survive_a_sigkill(
    store_url: str, redis_stream: tuple[str, Any], tmp_path: Path
) -> None:
    key, client = redis_stream
    async with open_store(store_url):
        pass  # migrate once, before three processes open it at the same moment
    sink = f"redis://127.0.0.1:6379/0?stream={key}"
    options = ("--workers", str(WORKERS), "--batch-size", str(BATCH), "--lease", str(LEASE))
    # The first relay's PostgreSQL sessions are named, to end them with the process below.
    marked = f"rs-killed-{uuid.uuid4().hex[:8]}"
    first_url = f"{store_url}&application_name={marked}" if "schema=" in store_url else store_url
    relays: list[RelayProcess] = [
        start_relay(url, sink, tmp_path / f"relay{i}.log", *options)
        for i, url in enumerate([first_url, store_url, store_url])
    ]
    total = RUNS * EVENTS_PER_RUN
    try:
        async with open_store(store_url) as store:
            assert isinstance(store, OutboxStore)
            await _bootstrap_all(store)
            await _wait_until(lambda: _longer_than(client, key, 1), 60, "the first delivery")
            rounds = iter(range(2, EVENTS_PER_RUN + 1))
            for n in itertools.islice(rounds, 3):
                await _append_round(store, n)
                await asyncio.sleep(0.1)
            await _wait_until(lambda: _longer_than(client, key, total // 4), 60, "a quarter")
            # SIGKILL one relay in the middle of the drain, between a publish and its record.
            # Each attempt follows a fresh round, so the relays are busy with its backlog.
            unrecorded: set[str] = set()
            async with _record_trap(store_url, marked) as kill_while_recording:
                for n in rounds:
                    await _append_round(store, n)
                    if not unrecorded:
                        unrecorded = await kill_while_recording(relays[0], client, key)
                        killed_at = time.monotonic()
            assert unrecorded, "the relay never held a published record after a round"
            await _wait_until(lambda: _drained(store), 60, "the outbox to drain")
            drained_after = time.monotonic() - killed_at
            reports = [relay.report(signal.SIGTERM) for relay in relays[1:]]
            stats = await store.outbox_stats()
    finally:
        for relay in relays:
            relay.kill()
    # Stopped relays handed everything back: nothing leased, nothing left.
    assert (stats.pending, stats.in_flight, stats.dead, stats.delivered) == (0, 0, 0, total)
    assert all(report["delivered"] > 0 for report in reports), reports
    entries = await _entries(client, key)
    repeats = _check_consumer_view(entries, total)
    # What the killed relay had published but not recorded came again, and nothing else did.
    assert len(unrecorded) <= repeats <= WORKERS * BATCH
    # The killed relay's leases held its runs back for at most the lease (plus the drain).
    assert drained_after < LEASE + 30


async def _longer_than(client: Any, key: str, count: int) -> bool:
    return bool(await client.xlen(key) >= count)


async def _drained(store: OutboxStore) -> bool:
    stats = await store.outbox_stats()
    return stats.pending == 0 and stats.in_flight == 0


def _check_consumer_view(entries: list[dict[str, Any]], total: int) -> int:
    """Each run's first sightings are 1..N in order; every repeat is an exact earlier entry."""
    seen: dict[str, dict[str, Any]] = {}
    per_run: dict[str, list[int]] = {}
    repeats = 0
    for entry in entries:
        earlier = seen.get(entry["id"])
        if earlier is not None:
            assert earlier == entry, "a redelivery must be the same message under the same id"
            repeats += 1
            continue
        seen[entry["id"]] = entry
        body = json.loads(entry["data"])
        assert body["id"] == entry["id"]
        per_run.setdefault(body["subject"], []).append(int(entry["seq"]))
    assert len(seen) == total
    assert per_run == {f"run-{i:03d}": list(range(1, EVENTS_PER_RUN + 1)) for i in range(RUNS)}
    return repeats


KillWhileRecording = Callable[[RelayProcess, Any, str], Coroutine[Any, Any, set[str]]]


@contextlib.asynccontextmanager
async def _record_trap(store_url: str, marked: str) -> AsyncIterator[KillWhileRecording]:
    """Yield an attempt to SIGKILL a relay after the broker acknowledged some records and
    before it recorded them; it returns those records' ids, or an empty set if it missed.

    On PostgreSQL the relay whose sessions are named ``marked`` is caught for certain: a
    trigger holds its deliveries' record on an advisory lock this test keeps, so it waits
    with its publish acknowledged; the test then kills it and ends its sessions (PostgreSQL
    notices a dead client only when it next writes to it, so the held statement would
    otherwise run when the lock lifts). SQLite has no waiting trigger: the attempt locks the
    database for a moment, which catches the relay if a publish was under way.
    """
    if store_url.startswith("sqlite:"):
        path = store_url.removeprefix("sqlite:///")

        async def sqlite_attempt(relay: RelayProcess, client: Any, key: str) -> set[str]:
            # A few short tries while the round's backlog lasts; each holds the lock long
            # enough for a publish under way to be acknowledged, well under the lease.
            for _ in range(3):
                published = await _sqlite_try(path, relay, client, key)
                if published:
                    return published
                await asyncio.sleep(0.03)
            return set()

        yield sqlite_attempt
        return
    import asyncpg

    schema = store_url.rsplit("schema=", 1)[1]
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'SET search_path TO "{schema}"')
        await admin.execute(_HOLD_RECORDS_SQL)
        await admin.execute("SELECT pg_advisory_lock(hashtext($1))", schema)

        async def postgres_attempt(relay: RelayProcess, client: Any, key: str) -> set[str]:
            deadline = time.monotonic() + 10
            while not await admin.fetchval(_HELD_SQL, marked):
                if time.monotonic() > deadline:
                    return set()
                await asyncio.sleep(0.01)
            rows = await admin.fetch(
                "SELECT run_id, seq FROM run_outbox "
                "WHERE lease_owner LIKE $1 AND delivered_at IS NULL",
                f"relay-%-{relay.process.pid}-%",
            )
            held = {f"{row['run_id']}:{row['seq']}" for row in rows}
            published = {entry["id"] for entry in await _entries(client, key)} & held
            relay.kill()
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1",
                marked,
            )
            return published

        yield postgres_attempt
    finally:
        with contextlib.suppress(Exception):
            await admin.execute("DROP TRIGGER IF EXISTS rs_test_hold_records ON run_outbox")
        await admin.close()


async def _sqlite_try(path: str, relay: RelayProcess, client: Any, key: str) -> set[str]:
    """Lock the database; if ``relay`` holds leases, wait for one of them to reach the
    broker (it then waits to record it) and SIGKILL the relay."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(connection.execute, "BEGIN IMMEDIATE")
        rows = await asyncio.to_thread(
            lambda: connection.execute(
                "SELECT run_id, seq FROM runstate_outbox "
                "WHERE lease_owner LIKE ? AND delivered_at IS NULL",
                (f"relay-%-{relay.process.pid}-%",),
            ).fetchall()
        )
        held = {f"{run_id}:{seq}" for run_id, seq in rows}
        deadline = time.monotonic() + 0.8
        published: set[str] = set()
        while held and not published and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            published = {entry["id"] for entry in await _entries(client, key)} & held
        if published:
            relay.kill()
        await asyncio.to_thread(connection.execute, "COMMIT")
        return published
    finally:
        connection.close()


# Sessions named rs-killed-* wait on this schema's advisory lock before marking a record
# delivered; everyone else passes (the shared lock is free unless the test holds it).
_HOLD_RECORDS_SQL = """
CREATE FUNCTION rs_test_hold_records() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('application_name') LIKE 'rs-killed-%' THEN
        PERFORM pg_advisory_xact_lock_shared(hashtext(TG_TABLE_SCHEMA));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER rs_test_hold_records BEFORE UPDATE OF delivered_at ON run_outbox
    FOR EACH ROW WHEN (OLD.delivered_at IS NULL AND NEW.delivered_at IS NOT NULL)
    EXECUTE FUNCTION rs_test_hold_records();
"""

_HELD_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                WHERE application_name = $1 AND wait_event_type = 'Lock'
                  AND wait_event = 'advisory')
"""
