"""Shared fixtures: services the tests need, and store factories for every adapter."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """A factory of stores on one adapter; every store it makes sees the same data."""
    kind: str = request.param
    if kind == "memory":
        url = f"memory://factory-{uuid.uuid4().hex}"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'runstate.db'}"
    else:
        require_service("PostgreSQL", "127.0.0.1", 5432)
        schema = unique_schema()
        url = f"{POSTGRES_URL}?schema={schema}"
    opened: list[RunStateStore] = []

    async def make() -> RunStateStore:
        store = await open_store(url)
        opened.append(store)
        return store

    try:
        yield make
    finally:
        for store in opened:
            await store.close()
        if kind == "postgres":
            await drop_postgres_schema(schema)
