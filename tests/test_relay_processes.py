"""Three `runstate relay` processes on one store: every event once per lease, in per-run order.

The consumer is a Redis stream, which keeps every entry (no deduplication), so redeliveries
after a SIGKILL show up there and are checked to be exact re-sends under the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
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


async def _write(store_url: str, started: Callable[[], Awaitable[bool]]) -> None:
    """Every run starts with one event; the other nine arrive in rounds while relays run."""
    async with open_store(store_url) as store:
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
        await _wait_until(started, 60, "the relays to start delivering")
        for n in range(2, EVENTS_PER_RUN + 1):
            await asyncio.gather(
                *(
                    store.append_and_enqueue_tx(
                        f"run-{i:03d}", [RunEventInput(type="Step", payload={"n": n})]
                    )
                    for i in range(RUNS)
                )
            )
            await asyncio.sleep(0.1)


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
    try:
        writer = asyncio.create_task(_write(store_url, lambda: _longer_than(client, key, 1)))
        total = RUNS * EVENTS_PER_RUN
        await _wait_until(lambda: _longer_than(client, key, total // 4), 60, "a quarter delivered")
        # SIGKILL one relay in the middle of the drain, between a publish and its record.
        unrecorded = await _kill_between_publish_and_record(
            store_url, relays[0], client, key, marked
        )
        killed_at = time.monotonic()
        await writer
        async with open_store(store_url) as store:
            assert isinstance(store, OutboxStore)
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


LeasedBy = Callable[[int], Coroutine[Any, Any, set[str]]]


@contextlib.asynccontextmanager
async def _outbox_locked(store_url: str, marked: str) -> AsyncIterator[LeasedBy]:
    """Hold the outbox against every writer (relays' claims and records wait), and yield a
    reader of the message ids a relay process (by PID) holds leases on.

    PostgreSQL notices a client that died only when it next writes to it, so a killed relay's
    statement queued behind the lock would still run when the lock lifts. The sessions named
    ``marked`` are ended before it lifts: a relay killed right after the broker acknowledged
    and before it recorded the delivery, the crash this test is about.
    """
    if store_url.startswith("sqlite:"):
        path = store_url.removeprefix("sqlite:///")
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        await asyncio.to_thread(connection.execute, "BEGIN IMMEDIATE")

        async def sqlite_leased(pid: int) -> set[str]:
            rows = await asyncio.to_thread(
                lambda: connection.execute(
                    "SELECT run_id, seq FROM runstate_outbox "
                    "WHERE lease_owner LIKE ? AND delivered_at IS NULL",
                    (f"relay-%-{pid}-%",),
                ).fetchall()
            )
            return {f"{run_id}:{seq}" for run_id, seq in rows}

        try:
            yield sqlite_leased
        finally:
            await asyncio.to_thread(connection.execute, "COMMIT")
            connection.close()
        return
    import asyncpg

    schema = store_url.rsplit("schema=", 1)[1]
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        async with admin.transaction():
            await admin.execute(f'LOCK TABLE "{schema}".run_outbox IN SHARE MODE')

            async def postgres_leased(pid: int) -> set[str]:
                rows = await admin.fetch(
                    f'SELECT run_id, seq FROM "{schema}".run_outbox '  # noqa: S608
                    "WHERE lease_owner LIKE $1 AND delivered_at IS NULL",
                    f"relay-%-{pid}-%",
                )
                return {f"{row['run_id']}:{row['seq']}" for row in rows}

            yield postgres_leased
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1",
                marked,
            )
    finally:
        await admin.close()


async def _kill_between_publish_and_record(
    store_url: str, relay: RelayProcess, client: Any, key: str, marked: str
) -> set[str]:
    """SIGKILL ``relay`` while it holds leases on records it already published; return them.

    With the outbox locked, every relay's next claim or record waits; a relay whose publish
    was under way is then stuck between the broker's acknowledgement and recording it.
    """
    for _ in range(40):
        async with _outbox_locked(store_url, marked) as leased_by:
            await asyncio.sleep(0.15)
            held = await leased_by(relay.process.pid)
            published = {entry["id"] for entry in await _entries(client, key)} & held
            if published:
                relay.kill()
                return published
        # Long enough for every relay's queued claims and records to get through: none of
        # the surviving relays' leases may run out while they wait for this test.
        await asyncio.sleep(0.3)
    raise AssertionError("the relay never held a published record")
