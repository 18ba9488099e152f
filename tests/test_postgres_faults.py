"""PostgreSQL faults under load: a (private) server restart, and backends killed under a relay.

``tests/test_postgres_adapter.py`` covers single killed backends, random kills of writers,
timeouts and refused logins; this file adds the server going away as a whole while writers
are busy, and killed connections under a relay that runs forever (claims, marks, LISTEN).
Calls made while the server is down fail with ``StoreUnavailable(retryable=True)``, the pool
heals without being reopened, later calls succeed, and nothing is half written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from typing import Any

import asyncpg
import pytest

from _pg_cluster import LoneServer, require_server_binaries, running_server
from conftest import IN_CI
from runstate import RunEventInput, StoreUnavailable, open_store
from runstate.adapters.postgres import PostgresStore
from runstate.relay import Relay
from runstate.relay.metrics import RelayMetrics
from runstate.sinks import CallableSink
from runstate.testing.contract import bootstrap_input, new_run_id

pytestmark = pytest.mark.postgres


async def _outbox_by_run(postgres_url: str, schema: str) -> dict[str, int]:
    connection = await asyncpg.connect(postgres_url)
    try:
        rows = await connection.fetch(
            f'SELECT run_id, count(*) AS n FROM "{schema}".run_outbox GROUP BY run_id'  # noqa: S608
        )
        return {row["run_id"]: int(row["n"]) for row in rows}
    finally:
        await connection.close()


async def test_server_restart_during_load_fails_retryably_then_heals() -> None:
    # A server of the test's own: restarting the shared one would break every other test.
    require_server_binaries()
    with running_server() as server:
        await _restart_during_load(server)


async def _restart_during_load(cluster: LoneServer) -> None:
    postgres_url, schema = cluster.url, "rs_restart"
    store = await open_store(postgres_url, schema=schema, pool_size=4, connect_timeout=2)
    assert isinstance(store, PostgresStore)
    bootstrapped: set[str] = set()
    appended: set[str] = set()
    attempted: set[str] = set()
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def writer() -> None:
        while not stop.is_set():
            run_id = new_run_id()
            attempted.add(run_id)
            try:
                await store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued", "RunStarted"))
                bootstrapped.add(run_id)
                await store.append_and_enqueue_tx(run_id, [RunEventInput(type="Step")])
                appended.add(run_id)
            except Exception as exc:
                errors.append(exc)
                await asyncio.sleep(0.05)

    restarted_at = 0.0
    try:
        writers = [asyncio.create_task(writer()) for _ in range(6)]
        try:
            await asyncio.sleep(1.0)
            ok_before = len(appended)
            await asyncio.to_thread(cluster.restart)  # returns once the server is up again
            restarted_at = time.monotonic()
            # Load goes on after the restart on the same store object: the pool must heal.
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await asyncio.gather(*writers)
        assert ok_before > 0
        assert errors, "the restart went unnoticed: no call failed"
        for exc in errors:
            assert isinstance(exc, StoreUnavailable), repr(exc)
            assert exc.retryable, str(exc)
            assert exc.code == "STORE_UNAVAILABLE"
        assert len(appended) > ok_before, "no write succeeded after the restart"
        # Calls in a row succeed now.
        for _ in range(20):
            run_id = new_run_id()
            await store.bootstrap_run_tx(bootstrap_input(run_id))
            assert [e.seq for e in await store.list_events(run_id)] == [1]
        # Nothing half-written: every run is whole, with its outbox records.
        outbox = await _outbox_by_run(postgres_url, schema)
        for run_id in attempted:
            metadata = await store.get_run_metadata_by_run_id(run_id)
            seqs = [e.seq for e in await store.list_events(run_id)]
            if run_id in appended:
                assert seqs == [1, 2, 3]
            elif run_id in bootstrapped:
                assert seqs in ([1, 2], [1, 2, 3])  # the append's reply may have been lost
            else:
                # A bootstrap whose reply was lost may or may not have committed.
                assert (metadata is None and seqs == []) or seqs in ([1, 2], [1, 2, 3])
            assert outbox.get(run_id, 0) == len(seqs), run_id
    finally:
        await store.close()
    assert restarted_at > 0


async def test_relay_survives_killed_backends_and_loses_nothing(
    postgres_url: str, schema: str
) -> None:
    app = f"rs_relaykill_{uuid.uuid4().hex[:10]}"
    url = f"{postgres_url}?application_name={app}"
    writer_store = await open_store(postgres_url, schema=schema, pool_size=3)
    relay_store = await open_store(url, schema=schema, pool_size=3)
    assert isinstance(relay_store, PostgresStore)
    received: list[dict[str, Any]] = []
    runs = [new_run_id() for _ in range(8)]

    async def consume(envelope: dict[str, Any]) -> None:
        received.append(envelope)

    relay = Relay(
        relay_store,
        CallableSink(consume, concurrency=4),
        workers=2,
        batch_size=5,
        lease_seconds=1.0,
        poll_interval=0.05,
        backoff_base=0.01,
        backoff_max=0.2,
        metrics=RelayMetrics(export=False),
    )
    try:
        for run_id in runs:
            await writer_store.bootstrap_run_tx(bootstrap_input(run_id))
        relaying = asyncio.create_task(relay.run_forever())
        admin = await asyncpg.connect(postgres_url)
        killed = 0
        try:
            for round_ in range(12):
                for run_id in runs:
                    await writer_store.append_and_enqueue_tx(
                        run_id, [RunEventInput(type="Step", payload={"round": round_})]
                    )
                await asyncio.sleep(0.05)
                killed += int(
                    await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = $1",
                        app,
                    )
                )
                assert not relaying.done(), relaying
        finally:
            await admin.close()
        assert killed > 0
        expected = {run_id: list(range(1, 14)) for run_id in runs}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats = await writer_store.outbox_stats()  # type: ignore[attr-defined]
            if stats.pending == stats.in_flight == stats.dead == 0:
                break
            assert not relaying.done(), relaying
            await asyncio.sleep(0.1)
        relay.stop()
        await asyncio.wait_for(relaying, 30)
    finally:
        if not relay.stopping:
            relay.stop()
        await relay_store.close()
        await writer_store.close()
    # At least once, per-run order of first deliveries, duplicates only with the same id.
    firsts: dict[str, list[int]] = defaultdict(list)
    seen: dict[str, dict[str, Any]] = {}
    for envelope in received:
        if envelope["id"] in seen:
            assert seen[envelope["id"]] == envelope, "a duplicate differs from the original"
            continue
        seen[envelope["id"]] = envelope
        firsts[envelope["subject"]].append(envelope["seq"])
    assert dict(firsts) == expected
    with contextlib.suppress(Exception):
        pass
    assert not IN_CI or received
