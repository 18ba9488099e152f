"""PostgreSQL through a real pgbouncer: transaction mode under pressure, session mode, the
relay command, and a missing schema named as the reason.

``test_contract_pgbouncer.py`` runs the whole contract suite through the shared
transaction-mode pgbouncer and ``store_factory`` runs the engine and relay tests through it;
here a pgbouncer with only two server connections makes every transaction of sixteen client
connections land on whichever server connection is free, so any session state would show.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from _pgbouncer import running_pgbouncer
from conftest import POSTGRES_URL, drop_postgres_schema, require_pgbouncer, require_service
from runstate import (
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    RunStateStore,
    StoreUnavailable,
    open_store,
)
from runstate.relay import Relay
from runstate.relay.metrics import RelayMetrics
from runstate.sinks import CallableSink
from runstate.store import OutboxStore, RunCatalog

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def narrow_pgbouncer() -> Iterator[str]:
    """Transaction mode with two server connections for every client."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_pgbouncer()
    with running_pgbouncer("transaction", pool_size=2) as url:
        yield url


@pytest.fixture(scope="module")
def session_pgbouncer() -> Iterator[str]:
    """Session mode: a client keeps its server connection, but no search_path at connect."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_pgbouncer()
    with running_pgbouncer("session", pool_size=10) as url:
        yield url


def _bootstrap(run_id: str) -> RunBootstrapInput:
    return RunBootstrapInput(
        metadata=RunMetadata(run_id=run_id, workflow="wf", input={"run": run_id}),
        first_events=[RunEventInput(type="RunQueued"), RunEventInput(type="RunStarted")],
    )


async def _work(stores: list[RunStateStore], runs: int, steps: int) -> None:
    async def one(index: int) -> None:
        store = stores[index % len(stores)]
        run_id = f"run-{index}"
        await store.bootstrap_run_tx(_bootstrap(run_id))
        for step in range(steps):
            await store.append_and_enqueue_tx(
                run_id, [RunEventInput(type="Step", payload={"step": step})], expected_seq=2 + step
            )
            assert len(await stores[(index + 1) % len(stores)].list_events(run_id)) >= 3 + step

    await asyncio.gather(*(one(index) for index in range(runs)))


async def _deliver_all(store: RunStateStore, expected: int) -> list[tuple[str, int]]:
    assert isinstance(store, OutboxStore)
    delivered: list[tuple[str, int]] = []
    everything = asyncio.Event()

    async def collect(event: dict[str, Any]) -> None:
        delivered.append((event["subject"], event["seq"]))
        if len(delivered) >= expected:
            everything.set()

    relay = Relay(
        store, CallableSink(collect), workers=3, batch_size=7, metrics=RelayMetrics(export=False)
    )
    forever = asyncio.create_task(relay.run_forever())
    try:
        async with asyncio.timeout(30):
            await everything.wait()
    finally:
        relay.stop()
        await forever
    return delivered


async def test_sixteen_clients_on_two_server_connections(
    narrow_pgbouncer: str, schema: str
) -> None:
    url = f"{narrow_pgbouncer}?pgbouncer=true&schema={schema}"
    stores = [await open_store(url, pool_size=4) for _ in range(4)]
    try:
        await _work(stores, runs=40, steps=3)
        catalog = stores[0]
        assert isinstance(catalog, RunCatalog)
        assert len(await catalog.list_runs(limit=100)) == 40
        delivered = await _deliver_all(stores[1], 40 * 5)
        assert sorted(delivered) == sorted((f"run-{i}", s) for i in range(40) for s in range(1, 6))
        for index in range(40):
            assert [s for r, s in delivered if r == f"run-{index}"] == [1, 2, 3, 4, 5]
    finally:
        for store in stores:
            await store.close()


@pytest.mark.parametrize("flag", ["true", "false"])
async def test_session_mode_with_and_without_the_pgbouncer_flag(
    session_pgbouncer: str, schema: str, flag: str
) -> None:
    url = f"{session_pgbouncer}?pgbouncer={flag}&schema={schema}"
    stores = [await open_store(url, pool_size=3) for _ in range(2)]
    try:
        await _work(stores, runs=10, steps=2)
        delivered = await _deliver_all(stores[0], 10 * 4)
        assert len(set(delivered)) == 40
        outbox = stores[1]
        assert isinstance(outbox, OutboxStore)
        # A relay waiting (LISTEN in session mode, polling with the flag) wakes on a write.
        waiter = asyncio.create_task(outbox.wait_for_outbox(10.0))
        await asyncio.sleep(0.2)
        await stores[0].bootstrap_run_tx(_bootstrap("wake-up"))
        async with asyncio.timeout(5):
            await waiter
    finally:
        for store in stores:
            await store.close()


def test_the_relay_command_delivers_through_pgbouncer(
    pgbouncer_url: str, schema: str, tmp_path: Path
) -> None:
    url = f"{pgbouncer_url}?pgbouncer=true&schema={schema}"

    async def seed() -> None:
        async with open_store(url) as store:
            await _work([store], runs=12, steps=1)

    asyncio.run(seed())
    out = tmp_path / "out.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runstate.cli",
            "relay",
            "--once",
            "--url",
            url,
            "--sink",
            out.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((e["subject"], e["seq"]) for e in lines) == sorted(
        (f"run-{i}", s) for i in range(12) for s in (1, 2, 3)
    )


@pytest.mark.parametrize("through", ["server", "pgbouncer"])
async def test_a_missing_schema_is_named_as_the_reason(
    through: str, schema: str, request: pytest.FixtureRequest
) -> None:
    base = POSTGRES_URL if through == "server" else request.getfixturevalue("pgbouncer_url")
    flag = "&pgbouncer=true" if through == "pgbouncer" else ""
    store = await open_store(f"{base}?schema={schema}{flag}", pool_size=2)
    try:
        await store.bootstrap_run_tx(_bootstrap("before"))
        await drop_postgres_schema(schema)
        with pytest.raises(StoreUnavailable) as caught:
            await store.bootstrap_run_tx(_bootstrap("after"))
        assert caught.value.retryable is False
        message = str(caught.value)
        assert f"schema {schema!r} has no runstate tables or functions" in message
        assert "runstate migrate" in message
        with pytest.raises(StoreUnavailable, match="has no runstate tables"):
            await store.list_events("before")
    finally:
        await store.close()


async def test_every_function_pins_its_search_path(schema: str) -> None:
    async with open_store(f"{POSTGRES_URL}?schema={schema}", pool_size=1):
        pass
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        rows = await admin.fetch(
            "SELECT p.proname, p.proconfig FROM pg_proc AS p"
            " JOIN pg_namespace AS n ON n.oid = p.pronamespace WHERE n.nspname = $1",
            schema,
        )
    finally:
        await admin.close()
    assert len(rows) == 7  # with the summary trigger and runstate_event_traces
    for row in rows:
        assert f'search_path="{schema}"' in row["proconfig"], row["proname"]
