"""What every handler gets: the store, the engine, the access policy, metrics, the waker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from ..engine import RunEngine
from ..errors import RunStateError
from ..store import OutboxStore, RunCatalog, RunStateStore
from ._auth import AccessPolicy
from ._http import Problem
from ._metrics import ServerMetrics

log = logging.getLogger("runstate.server")

IDLE_POLL_SECONDS = 1.0


class FeedWaker:
    """Wakes live streams when events may have been committed.

    Writes through this server wake them at once; while a stream is open, one background task
    waits on the store's outbox wake-up (``wait_for_outbox``: NOTIFY on PostgreSQL, a
    data-version poll on SQLite) for writes by other processes, so streams never each hold a
    waiter of their own, and a server without streams pays nothing for it.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._store: OutboxStore | None = None
        self._subscribers = 0

    def notify(self) -> None:
        """Wake every stream waiting now."""
        if not self._subscribers:
            return  # no stream holds a mark: nothing to wake, nothing to allocate
        event, self._event = self._event, asyncio.Event()
        event.set()

    def mark(self) -> asyncio.Event:
        """Take the current notification, before reading: a write after it is never missed."""
        return self._event

    async def wait(self, mark: asyncio.Event, timeout: float) -> None:
        """Return once a notification came after ``mark`` was taken, or after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(mark.wait(), timeout)

    def start(self, store: RunStateStore) -> None:
        """Follow the store's writes by other processes while at least one stream is open."""
        self._store = store if isinstance(store, OutboxStore) else None

    @contextlib.asynccontextmanager
    async def subscribed(self) -> AsyncIterator[None]:
        """Hold a stream's interest; the background waiter runs only while one is held."""
        self._subscribers += 1
        if self._task is None and self._store is not None:
            self._task = asyncio.create_task(self._follow(self._store), name="runstate-waker")
        try:
            yield
        finally:
            self._subscribers -= 1
            if self._subscribers == 0:
                await self.stop()

    async def _follow(self, store: OutboxStore) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await store.wait_for_outbox(IDLE_POLL_SECONDS)
            except RunStateError as exc:
                log.warning("feed wake-up failed, retrying: %s", exc)
                await asyncio.sleep(IDLE_POLL_SECONDS)
                continue
            # Waking at the timeout means nothing was written: streams keep waiting (and send
            # their keep-alive comments); they re-read at every keep-alive all the same.
            if loop.time() - started < IDLE_POLL_SECONDS * 0.9:
                self.notify()

    async def stop(self) -> None:
        """Stop the background task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class ServerContext:
    """The server's shared state; the store is opened when the app starts."""

    def __init__(
        self,
        *,
        access: AccessPolicy,
        max_body_bytes: int,
        stream_heartbeat_seconds: float = 15.0,
    ) -> None:
        self.access = access
        self.max_body_bytes = max_body_bytes
        self.stream_heartbeat_seconds = stream_heartbeat_seconds
        self.metrics = ServerMetrics()
        self._store: RunStateStore | None = None
        self._engine: RunEngine | None = None
        self._catalog: RunCatalog | None = None
        self._outbox: OutboxStore | None = None
        self.waker: FeedWaker | None = None

    def attach(self, store: RunStateStore) -> None:
        """Use ``store`` from now on (called on the server's event loop)."""
        self._store = store
        self._engine = RunEngine(store)
        # Protocol isinstance checks are slow: decide once, not on every request.
        self._catalog = store if isinstance(store, RunCatalog) else None
        self._outbox = store if isinstance(store, OutboxStore) else None
        self.waker = FeedWaker()
        self.waker.start(store)

    async def detach(self) -> RunStateStore | None:
        """Stop background work and hand back the store for closing."""
        if self.waker is not None:
            await self.waker.stop()
        store, self._store, self._engine = self._store, None, None
        self._catalog = self._outbox = None
        return store

    @property
    def store(self) -> RunStateStore:
        """The open store."""
        if self._store is None:
            raise Problem("STORE_UNAVAILABLE", "the server is starting or stopping", retryable=True)
        return self._store

    @property
    def engine(self) -> RunEngine:
        """The run engine over the store."""
        if self._engine is None:
            raise Problem("STORE_UNAVAILABLE", "the server is starting or stopping", retryable=True)
        return self._engine

    @property
    def catalog(self) -> RunCatalog:
        """The store's catalog interface."""
        if self._catalog is None:
            raise Problem("NOT_IMPLEMENTED", f"{type(self.store).__name__} has no run catalog")
        return self._catalog

    @property
    def has_outbox(self) -> bool:
        """Whether the store implements the outbox interface."""
        return self._outbox is not None

    @property
    def outbox(self) -> OutboxStore:
        """The store's outbox interface."""
        if self._outbox is None:
            raise Problem("NOT_IMPLEMENTED", f"{type(self.store).__name__} has no outbox")
        return self._outbox

    def notify_write(self) -> None:
        """Wake live streams after a write through this server."""
        if self.waker is not None:
            self.waker.notify()
