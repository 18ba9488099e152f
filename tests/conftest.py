"""Shared fixtures: services the tests need, and store factories for every adapter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _pgbouncer import find_pgbouncer, running_pgbouncer
from runstate import RunStateStore, open_store

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
POSTGRES_URL = os.environ.get(
    "RUNSTATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

StoreFactory = Callable[[], Awaitable[RunStateStore]]


def service_reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    """Return True if a TCP connection to ``host:port`` opens."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip the test when the service is down; under CI=true fail instead, never skip."""
    if service_reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure)")
    pytest.skip(f"{message}; start it to run this test")


def standard_webhook_signed(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether the ``standardwebhooks`` library accepts a request signed with a raw secret."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    try:
        # A raw (not whsec_) secret goes to the verifier as bytes: it decodes strings as base64.
        Webhook(secret.encode()).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


@contextlib.asynccontextmanager
async def loopback_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A TCP server on a free loopback port answering with ``handle``; yields the port."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def unique_schema() -> str:
    """Return a fresh PostgreSQL schema name for one test."""
    return f"rs_test_{uuid.uuid4().hex[:16]}"


async def drop_postgres_schema(schema: str) -> None:
    """Drop a test schema and everything in it."""
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture
def postgres_url() -> str:
    """The test PostgreSQL server's URL; skips (or fails in CI) when it is down."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


def require_pgbouncer() -> None:
    """Skip when pgbouncer is not installed; under CI=true fail instead, never skip."""
    if find_pgbouncer() is not None:
        return
    message = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pgbouncer_url() -> Iterator[str]:
    """A private pgbouncer in transaction mode in front of the test server (tests/_pgbouncer.py).

    Stores opened through it need ``pgbouncer=true``; schemas are dropped with
    ``drop_postgres_schema`` (straight to the server).
    """
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_pgbouncer()
    with running_pgbouncer("transaction") as url:
        yield url


@pytest.fixture
async def schema(postgres_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL schema name, dropped after the test."""
    name = unique_schema()
    try:
        yield name
    finally:
        await drop_postgres_schema(name)


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[Any]:
    """A plain asyncpg connection, for setting up locks and killing backends."""
    import asyncpg

    connection = await asyncpg.connect(postgres_url)
    try:
        yield connection
    finally:
        await connection.close()


async def lock_run_row(admin: Any, schema: str, run_id: str) -> None:
    """Lock a run's metadata row in ``admin``'s open transaction: writes to the run wait."""
    await admin.execute(
        f'SELECT 1 FROM "{schema}".run_metadata WHERE run_id = $1 FOR UPDATE',  # noqa: S608
        run_id,
    )


@pytest.fixture
async def nats_stream() -> AsyncIterator[tuple[str, str]]:
    """A unique JetStream stream name and subject prefix, deleted after the test."""
    require_service("NATS", "127.0.0.1", 4222)
    import nats

    suffix = uuid.uuid4().hex[:12]
    stream, prefix = f"RS_TEST_{suffix}", f"rstest.{suffix}"
    yield stream, prefix
    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


@pytest.fixture
async def rabbitmq_exchange() -> AsyncIterator[tuple[str, Any]]:
    """A durable topic exchange with a unique name and an exclusive queue bound to all of it.

    Yields the exchange name and the aio-pika queue; both are deleted after the test.
    """
    require_service("RabbitMQ", "127.0.0.1", 5672)
    import aio_pika

    exchange_name = f"rs-test-{uuid.uuid4().hex[:12]}"
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="#")
        yield exchange_name, queue
        await queue.delete(if_unused=False, if_empty=False)
        await exchange.delete()
    finally:
        await connection.close()


ASYNC_KINDS = ["memory", "sqlite", "postgres", "pgbouncer"]
#: runstate.sync's stores, behind ThreadedStore: every call on a thread of its own.
SYNC_KINDS = ["sync-memory", "sync-sqlite", "sync-postgres"]


async def _factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Stores of one kind; ``pgbouncer`` is PostgreSQL through a transaction-mode pgbouncer."""
    kind: str = request.param
    adapter = kind.removeprefix("sync-")
    if adapter == "memory":
        url = f"memory://factory-{uuid.uuid4().hex}"
    elif adapter == "sqlite":
        url = f"sqlite:///{tmp_path / 'runstate.db'}"
    elif adapter == "pgbouncer":
        schema = unique_schema()
        url = f"{request.getfixturevalue('pgbouncer_url')}?schema={schema}&pgbouncer=true"
    else:
        require_service("PostgreSQL", "127.0.0.1", 5432)
        schema = unique_schema()
        url = f"{POSTGRES_URL}?schema={schema}"
    opened: list[RunStateStore] = []

    async def make() -> RunStateStore:
        if kind.startswith("sync-"):
            from runstate import sync
            from runstate.testing import ThreadedStore
            from runstate.testing.threaded import in_thread

            store: RunStateStore = ThreadedStore(await in_thread(sync.open_store, url))
        else:
            store = await open_store(url)
        opened.append(store)
        return store

    try:
        yield make
    finally:
        for store in opened:
            await store.close()
        if adapter in ("postgres", "pgbouncer"):
            await drop_postgres_schema(schema)


@pytest.fixture(params=ASYNC_KINDS)
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """A factory of stores on one adapter; every store it makes sees the same data."""
    async for factory in _factory(request, tmp_path):
        yield factory


@pytest.fixture(params=ASYNC_KINDS + SYNC_KINDS)
async def engine_store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """``store_factory`` on the async adapters and on runstate.sync's (for ``make_engine``)."""
    async for factory in _factory(request, tmp_path):
        yield factory


def make_engine(store: Any, **options: Any) -> Any:
    """The engine under test for a store of ``engine_store_factory``.

    The async ``RunEngine``; or, when the store is (or wraps) a ``ThreadedStore``,
    runstate.sync's ``RunEngine`` with the same options, exposed as async by
    ``ThreadedEngine``: its commands run on threads, and a test double wrapping the store
    (to inject races or faults) is reached through ``SyncFacade``.
    """
    from runstate import RunEngine
    from runstate.testing import ThreadedStore

    inner = store
    while not isinstance(inner, ThreadedStore) and hasattr(inner, "inner"):
        inner = inner.inner
    if not isinstance(inner, ThreadedStore):
        return RunEngine(store, **options)
    from runstate import sync

    sync_store = inner.sync if inner is store else SyncFacade(store)
    return ThreadedEngine(sync.RunEngine(sync_store, **options))


class ThreadedEngine:
    """runstate.sync's ``RunEngine`` with async methods: each command on a thread of its own."""

    def __init__(self, engine: Any) -> None:
        self.sync = engine

    def __getattr__(self, name: str) -> Any:
        from runstate.testing.threaded import in_thread

        method = getattr(self.sync, name)
        if not callable(method) or name in ("on_queued",):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await in_thread(method, *args, **kwargs)

        return call


class SyncFacade:
    """A blocking store over an async one living on the test's event loop (for test doubles).

    Used from the threads a ``ThreadedEngine`` runs commands on: each call is handed to the
    test's loop, which is free while the test awaits the command.
    """

    def __init__(self, store: Any) -> None:
        import asyncio

        self._store = store
        self._loop = asyncio.get_running_loop()

    def __getattr__(self, name: str) -> Any:
        import asyncio

        method = getattr(self._store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            future = asyncio.run_coroutine_threadsafe(method(*args, **kwargs), self._loop)
            return future.result()

        return call
