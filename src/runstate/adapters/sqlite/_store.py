"""``SQLiteStore``: the store, catalog and outbox on one database file, via two threads.

Writes run on the writer thread (group-committed), reads on the reader thread; see the
package's docstring for URLs, options and durability. The relay's outbox bookkeeping (claim,
mark delivered or failed, release) takes the writer's first lane, ahead of queued engine
writes, so a burst of runs does not hold back the delivery of what is already committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime

from ..._validation import (
    check_append,
    check_bootstrap,
    check_claim,
    check_failure,
    check_identifier,
    check_outbox_ids,
    check_page,
    check_purge,
    check_run_filters,
    check_wait_timeout,
    parse_position_cursor,
)
from ...tracing import current_trace_context, traced_write
from ...types import (
    AppendResult,
    DeadLetter,
    FeedPage,
    OutboxRecord,
    OutboxStats,
    RunBootstrapInput,
    RunEventInput,
    RunEventPersisted,
    RunFilter,
    RunListPage,
    RunMetadata,
    RunOrder,
    RunSummary,
)
from .._base import OutboxWaiters, StoreBase
from .._catalog import check_dead_letter_page, check_run_filter, check_run_query, page_of
from ._connect import SQLiteOptions
from ._migrate import migrate_connection
from ._ops import (
    append,
    bootstrap,
    data_version,
    get_metadata,
    head_position,
    list_events,
    list_runs,
    read,
    read_feed,
)
from ._outbox import (
    claim,
    dead_letters,
    mark_delivered,
    mark_failed,
    purge,
    read_store_id,
    redrive,
    release,
    stats,
)
from ._query import count_runs, query_runs
from ._writer import CommitWake, ConnectionThread

#: How often ``wait_for_outbox`` looks for commits made by other processes.
POLL_INTERVAL = 0.05

# Waiters of every open store of this process, by database path: a write through one store
# (async or synchronous) wakes relays waiting on another store of the same file without
# waiting for their poll. An entry lives while someone waits on that file.
_waiters: dict[str, OutboxWaiters] = {}
_watchers: dict[str, int] = {}
_waiters_lock = threading.Lock()


@contextlib.contextmanager
def _watching(path: str) -> Iterator[OutboxWaiters]:
    """The waiters of one database file, registered for the duration of the block."""
    with _waiters_lock:
        waiters = _waiters.setdefault(path, OutboxWaiters())
        _watchers[path] = _watchers.get(path, 0) + 1
    try:
        yield waiters
    finally:
        with _waiters_lock:
            _watchers[path] -= 1
            if not _watchers[path]:
                del _watchers[path], _waiters[path]


def _wake(path: str) -> None:
    waiters = _waiters.get(path)
    if waiters is not None:
        waiters.wake()


def _connect_now(connection: sqlite3.Connection) -> None:
    """A no-op job: running it makes the thread connect (and surface connection errors)."""


class SQLiteStore(StoreBase):
    """A ``RunStateStore``, ``RunCatalog`` and ``OutboxStore`` in one SQLite database file.

    Open it with ``open_store("sqlite:///path.db")`` or ``await SQLiteStore.open(options)``;
    close it with ``await store.close()``.
    """

    def __init__(
        self, options: SQLiteOptions, writer: ConnectionThread, reader: ConnectionThread
    ) -> None:
        self.options = options
        self.path = options.path
        self._max_payload_bytes = options.max_payload_bytes
        self._writer = writer
        self._reader = reader
        #: The database attributes of this store's spans (see ``runstate.tracing``).
        self.trace_attributes = {"db.system.name": "sqlite", "db.namespace": str(self.path)}
        # Stop the threads if the store is dropped unclosed; they close their connections.
        self._finalizer = weakref.finalize(self, _stop_threads, writer, reader)

    @classmethod
    async def open(cls, options: SQLiteOptions) -> SQLiteStore:
        """Connect, migrate the schema if needed, and return the open store."""
        writer = ConnectionThread(
            options,
            "runstate-sqlite-writer",
            on_commit=CommitWake(
                functions=frozenset((bootstrap, append)),
                wake=functools.partial(_wake, options.path),
            ),
        )
        reader = ConnectionThread(options, "runstate-sqlite-reader")
        try:
            await writer.call(migrate_connection, options.path)
            await reader.call(_connect_now)
        except BaseException:
            await asyncio.gather(writer.stop(), reader.stop())
            raise
        return cls(options, writer, reader)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SQLiteStore {self.path!r} synchronous={self.options.synchronous} {state}>"

    async def _close(self) -> None:
        """Finish the queued work, close both connections and end the threads."""
        self._finalizer.detach()
        await asyncio.gather(self._writer.stop(), self._reader.stop())

    # -- the store contract --------------------------------------------------------------

    @traced_write("bootstrap_run_tx")
    async def bootstrap_run_tx(self, input: RunBootstrapInput) -> AppendResult:
        """Atomically store a new run's metadata, its first events and their outbox records."""
        self._check_open()
        checked_metadata, checked_events = check_bootstrap(input, self._max_payload_bytes)
        # The writer wakes waiting relays as it commits, before returning (``on_commit``).
        result: AppendResult = await self._writer.write(
            bootstrap, checked_metadata, checked_events, input, current_trace_context()
        )
        return result

    @traced_write("append_and_enqueue_tx")
    async def append_and_enqueue_tx(
        self,
        run_id: str,
        events: Sequence[RunEventInput],
        *,
        expected_seq: int | None = None,
    ) -> AppendResult:
        """Atomically append events to an existing run, with one outbox record per new event."""
        self._check_open()
        checked = check_append(run_id, events, expected_seq, self._max_payload_bytes)
        result: AppendResult = await self._writer.write(
            append, run_id, checked, expected_seq, current_trace_context()
        )
        return result

    async def list_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[RunEventPersisted]:
        """Return the run's events with ``seq > after_seq`` in seq order, at most ``limit``."""
        self._check_open()
        check_identifier(run_id, "run_id")
        check_page(after_seq, limit)
        if limit == 0:
            return []
        return await self._reader.call(list_events, run_id, after_seq, limit)

    async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        """Return the run's metadata, or ``None`` if the run does not exist."""
        self._check_open()
        check_identifier(run_id, "run_id")
        return await self._reader.call(get_metadata, run_id)

    # -- the catalog: store-wide reads ---------------------------------------------------

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        tenant_id: str | None = None,
        created_after: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunSummary]:
        """Return runs newest first (``created_at``, then ``run_id``, descending)."""
        self._check_open()
        check_run_filters(workflow, tenant_id, created_after, limit, offset)
        return await self._reader.call(list_runs, workflow, tenant_id, created_after, limit, offset)

    async def query_runs(
        self,
        filter: RunFilter | None = None,
        *,
        order_by: RunOrder = "created_at",
        descending: bool = True,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunListPage:
        """Return one page of run summaries matching the filter (keyset paging, ties by run_id)."""
        self._check_open()
        query = check_run_query(filter, order_by, descending, limit, cursor)
        rows = await self._reader.call(query_runs, query)
        runs, next_cursor = page_of(query, rows)
        return RunListPage(runs=runs, next_cursor=next_cursor)

    async def count_runs_by_status(self, filter: RunFilter | None = None) -> Mapping[str, int]:
        """Return how many runs match the filter per status (the filter's statuses ignored)."""
        self._check_open()
        query = check_run_filter(filter)
        counts: Mapping[str, int] = await self._reader.call(count_runs, query)
        return counts

    async def read_feed(self, *, cursor: str | None = None, limit: int = 500) -> FeedPage:
        """Return events of every run committed after ``cursor``, in position order.

        The cursor is the last position returned: positions are assigned under the
        database's write lock, so commits become visible in position order and no event
        ever appears behind a cursor already handed out.
        """
        self._check_open()
        after = parse_position_cursor(cursor, limit)
        events, last = await self._reader.call(read_feed, after, limit)
        return FeedPage(events=events, cursor=str(last))

    async def feed_head(self) -> str:
        """Return a cursor at the current end of the feed, to follow only newer events."""
        self._check_open()
        return str(await self._reader.call(head_position))

    # -- the outbox ------------------------------------------------------------------------

    async def claim_outbox_batch(
        self, *, owner: str, limit: int, lease_seconds: float
    ) -> list[OutboxRecord]:
        """Lease up to ``limit`` deliverable records to ``owner``, in per-run seq order."""
        self._check_open()
        check_claim(owner, limit, lease_seconds)
        if limit == 0:
            return []
        return await self._writer.write_first(claim, owner, limit, lease_seconds)

    async def mark_delivered(self, outbox_ids: Sequence[int], *, owner: str) -> int:
        """Record delivery of records leased by ``owner``; return how many were updated."""
        self._check_open()
        ids = check_outbox_ids(outbox_ids, owner)
        if not ids:
            return 0
        return await self._writer.write_first(mark_delivered, ids, owner)

    async def mark_failed(
        self, outbox_id: int, *, owner: str, error: str, retry_at: datetime | None
    ) -> None:
        """Record a failed delivery: retry at ``retry_at``, or dead-letter when it is ``None``."""
        self._check_open()
        text = check_failure(outbox_id, owner, error, retry_at)
        await self._writer.write_first(mark_failed, outbox_id, owner, text, retry_at)

    async def release_outbox(self, outbox_ids: Sequence[int], *, owner: str) -> None:
        """Give back leased records undelivered, without counting an attempt."""
        self._check_open()
        ids = check_outbox_ids(outbox_ids, owner)
        if ids:
            await self._writer.write_first(release, ids, owner)
        _wake(self.path)

    async def redrive_dead_letters(self, *, run_id: str | None = None) -> int:
        """Make dead-lettered records deliverable again; return how many."""
        self._check_open()
        check_identifier(run_id, "run_id", optional=True)
        count: int = await self._writer.write(redrive, run_id)
        if count:
            _wake(self.path)
        return count

    async def list_dead_letters(
        self, *, run_id: str | None = None, limit: int = 100, after_outbox_id: int | None = None
    ) -> list[DeadLetter]:
        """Return dead-lettered records oldest first, with their last error and attempts."""
        self._check_open()
        check_dead_letter_page(run_id, limit, after_outbox_id)
        letters: list[DeadLetter] = await self._reader.call(
            dead_letters, run_id, limit, after_outbox_id or 0
        )
        return letters

    async def purge_delivered(self, *, older_than: datetime, limit: int = 1000) -> int:
        """Delete up to ``limit`` records delivered before ``older_than``; return how many."""
        self._check_open()
        check_purge(older_than, limit)
        purged: int = await self._writer.write(purge, older_than, limit)
        return purged

    async def outbox_stats(self) -> OutboxStats:
        """Summarize the outbox: pending, in flight, dead, delivered, oldest pending."""
        self._check_open()
        summary: OutboxStats = await self._reader.call(read, stats)
        return summary

    async def store_id(self) -> str:
        """Return the id generated when this database's schema was created."""
        self._check_open()
        return str(await self._reader.call(read_store_id))

    async def wait_for_outbox(self, timeout: float) -> None:
        """Return when new records may be claimable, or after ``timeout`` seconds.

        Writes through any store of this process wake the waiter at once; commits by other
        processes are noticed by polling ``PRAGMA data_version`` every ``POLL_INTERVAL``.
        """
        self._check_open()
        timeout = check_wait_timeout(timeout)
        deadline = time.monotonic() + timeout
        with _watching(self.path) as waiters, waiters.async_waiter() as waiter:
            baseline = await self._reader.call_first(data_version)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or waiter.is_set():
                    return
                if await waiter.wait(min(POLL_INTERVAL, remaining)):
                    return
                if self._closed or await self._reader.call_first(data_version) != baseline:
                    return


def _stop_threads(*threads: ConnectionThread) -> None:
    for thread in threads:
        thread.stop_now()
