"""The waiting side of ``wait_for_outbox``: LISTEN on one lazily opened, self-healing
connection, or, behind a transaction-mode pooler, polling.

Writers notify only while some relay is registered as waiting (``runstate_watch``), because
notifying commits are serialized by PostgreSQL; see ``0002_write_functions.sql``. A pooler
in transaction mode hands each transaction to any server connection, so a LISTEN (session
state) would be lost and a watcher row left behind: there, waiters poll instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ._queries import schema_queries

NOTIFY_CHANNEL = "runstate_outbox"
"""Writes send one NOTIFY on this channel, with the schema name as its payload."""


class OutboxListener:
    """Wakes waiters when a write to ``schema`` commits; reconnects after a lost connection."""

    def __init__(self, schema: str, connect: Callable[[], Awaitable[Any]]) -> None:
        self._schema = schema
        self._q = schema_queries(schema)
        self._connect = connect
        self._connection: Any = None
        # One asyncpg connection runs one query at a time; waiters share it.
        self._lock = asyncio.Lock()
        self._waiters: set[asyncio.Event] = set()
        self._closed = False

    async def wait(self, timeout: float) -> None:
        """Return on the next notification for the schema, or after ``timeout`` seconds."""
        if timeout <= 0 or self._closed:
            return
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            if await self._watch():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), timeout)
        finally:
            self._waiters.discard(waiter)
            if not self._waiters:
                await self._unwatch()

    async def _watch(self) -> bool:
        async with self._lock:
            if self._connection is None or self._connection.is_closed():
                self._connection = None
                connection = await self._connect()
                try:
                    connection.add_termination_listener(self._on_terminated)
                    await connection.add_listener(NOTIFY_CHANNEL, self._on_notify)
                except BaseException:
                    connection.terminate()
                    raise
                self._connection = connection
            return bool(await self._connection.fetchval(self._q["watch"]))

    async def _unwatch(self) -> None:
        async with self._lock:
            connection = self._connection
            if connection is None or connection.is_closed() or self._closed:
                return
            try:
                await connection.fetchval(self._q["unwatch"])
            except Exception:
                # A connection that cannot unregister is dropped; its row dies with it.
                self._connection = None
                connection.terminate()

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if payload == self._schema:
            self._wake()

    def _on_terminated(self, connection: Any) -> None:
        if connection is self._connection:
            self._connection = None
        # Waiters return now and the next wait reconnects, rather than sleeping deaf.
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    async def close(self) -> None:
        """Close the LISTEN connection and release every waiter."""
        self._closed = True
        self._wake()
        async with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), 5.0)
            except Exception:
                # A connection that cannot close politely is cut; close() must not fail.
                connection.terminate()


class OutboxPoller:
    """Waits for claimable records by asking every ``interval`` seconds (no LISTEN)."""

    #: Seconds between two polls: the most a relay waits for a new record behind a pooler.
    interval = 0.1

    def __init__(self, claimable: Callable[[], Awaitable[bool]]) -> None:
        self._claimable = claimable
        self._closed = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Return once a record is claimable, or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._closed.is_set() and not await self._claimable():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), min(self.interval, remaining))

    async def close(self) -> None:
        """Release every waiter."""
        self._closed.set()
