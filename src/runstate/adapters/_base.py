"""What every adapter shares: the closed-store check and ``async with`` (``with`` for the
synchronous stores), outbox waiters on any loop or thread, per-waiter error copies,
first-occurrence dedupe, and building results without reading them back."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Self

from .._validation import CheckedEvent
from ..errors import StoreClosed, StoreUnavailable
from ..types import (
    RunBootstrapInput,
    RunEventPersisted,
    RunMetadata,
    new_persisted_event,
    same_run_identity,
)


class StoreBase:
    """The life cycle every adapter shares: ``async with`` and the closed check.

    Subclasses implement ``_close`` (release connections and threads); ``close`` calls it
    once, and every method calls ``_check_open`` first.
    """

    _closed: bool = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    async def close(self) -> None:
        """Release the store's resources; it is unusable afterwards. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._close()

    async def _close(self) -> None:
        """Release what the adapter holds; called once, by ``close``."""

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed()


class SyncStoreBase:
    """``StoreBase`` for the synchronous stores of ``runstate.sync``: ``with`` and ``close()``."""

    _closed: bool = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def close(self) -> None:
        """Release the store's resources; it is unusable afterwards. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._close()

    def _close(self) -> None:
        """Release what the adapter holds; called once, by ``close``."""

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed()


class AsyncWaiter:
    """One ``wait_for_outbox`` call on an event loop; ``wake`` is safe from any thread."""

    __slots__ = ("_event", "_loop")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def is_set(self) -> bool:
        """Whether a write woke this waiter."""
        return self._event.is_set()

    def wake(self) -> None:
        """Wake the waiter: at once on its own loop, through the loop from anywhere else."""
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is self._loop:
            self._event.set()
        else:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; return whether a write woke the waiter."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        return self._event.is_set()


class ThreadWaiter:
    """One ``wait_for_outbox`` call of a synchronous store, blocking its thread."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def is_set(self) -> bool:
        """Whether a write woke this waiter."""
        return self._event.is_set()

    def wake(self) -> None:
        """Wake the waiter, from any thread."""
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; return whether a write woke the waiter."""
        return self._event.wait(timeout)


class OutboxWaiters:
    """The ``wait_for_outbox`` calls on one store's data, woken by writes through any store.

    Waiters sit on any event loop or thread, so async and synchronous stores on the same data
    (a ``memory://name``, one SQLite file) wake each other's relays.
    """

    def __init__(self) -> None:
        self._waiters: set[AsyncWaiter | ThreadWaiter] = set()

    def wake(self) -> None:
        """Wake every waiter."""
        if self._waiters:
            # list(): a snapshot taken in one step, while other threads add and discard.
            for waiter in list(self._waiters):
                waiter.wake()

    @contextlib.contextmanager
    def async_waiter(self) -> Iterator[AsyncWaiter]:
        """Register a waiter on the running event loop for the duration of the block."""
        waiter = AsyncWaiter()
        self._waiters.add(waiter)
        try:
            yield waiter
        finally:
            self._waiters.discard(waiter)

    @contextlib.contextmanager
    def thread_waiter(self) -> Iterator[ThreadWaiter]:
        """Register a waiter of the calling thread for the duration of the block."""
        waiter = ThreadWaiter()
        self._waiters.add(waiter)
        try:
            yield waiter
        finally:
            self._waiters.discard(waiter)


def copy_error(error: BaseException) -> BaseException:
    """One exception object per waiting caller, so tracebacks never pile up on a shared one.

    Used where one failure answers several calls (a group commit lost with its connection).
    A cancellation of the shared work is reported to each caller as a retryable failure.
    """
    if isinstance(error, StoreUnavailable):
        copy = StoreUnavailable(str(error), retryable=error.retryable)
        copy.__cause__ = error.__cause__
        return copy
    if isinstance(error, asyncio.CancelledError):
        return StoreUnavailable("the batched write was cancelled before it finished")
    return error


def first_occurrences(events: Sequence[CheckedEvent]) -> list[int]:
    """Indexes (0-based, in call order) of the first event with each event id."""
    seen: set[str] = set()
    firsts: list[int] = []
    for index, item in enumerate(events):
        event_id = item.event.event_id
        if event_id not in seen:
            seen.add(event_id)
            firsts.append(index)
    return firsts


def persisted_event(
    item: CheckedEvent, run_id: str, seq: int, position: int, recorded_at: datetime
) -> RunEventPersisted:
    """The stored form of a validated event, without reading it back.

    The payload is the validation's private copy, which equals the stored JSON read back;
    ``occurred_at`` is the validation's UTC form, as every adapter returns it.
    """
    event = item.event
    stored: RunEventPersisted = new_persisted_event(
        run_id,
        seq,
        position,
        event.type,
        item.payload,
        event.event_id,
        event.schema_version,
        item.occurred_at,
        recorded_at,
    )
    return stored


def unique_first_event_ids(request: RunBootstrapInput) -> list[str]:
    """The ids a bootstrap stores: its first events' ids, duplicates dropped, in order."""
    return list(dict.fromkeys(event.event_id for event in request.first_events))


def is_same_bootstrap(
    request: RunBootstrapInput, stored: RunMetadata, stored_first_ids: list[str]
) -> bool:
    """Tell whether a stored run came from ``request``: same metadata and first event ids.

    ``stored_first_ids`` are the ids of the run's first stored events, as many as
    ``unique_first_event_ids(request)`` holds. A retry after an ambiguous commit matches;
    a different request for the same run id does not.
    """
    return (
        same_run_identity(request.metadata, stored)
        and unique_first_event_ids(request) == stored_first_ids
    )
