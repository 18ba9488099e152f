"""The SQLite store: the embedded default, one database file shared by any number of processes.

URLs. Everything after ``sqlite:///`` is the file path, as in SQLAlchemy:

- ``sqlite:///runstate.db``, ``sqlite:///./data/runstate.db``: relative to the current
  directory when the store is opened (``sqlite:///tmp/x.db`` is therefore ``./tmp/x.db``);
- ``sqlite:////var/lib/app/runstate.db`` (four slashes): absolute;
- ``%``-escapes are decoded (``sqlite:///my%20runs.db``); a host part is refused;
- ``sqlite:///:memory:`` is refused: the store needs several connections on one database,
  so use ``memory://`` for a store in memory.

Options, as ``open_store`` keywords or URL query parameters (keywords win):
``synchronous`` (``"FULL"``, the default, or ``"NORMAL"``: faster, and a power loss may
undo the last commits but never corrupts the file), ``busy_timeout`` (seconds to wait for
another writer, default 5) and ``max_payload_bytes`` (default 1 MiB).

A missing file is created with its folder, readable by its owner only (mode 0600). The
schema is migrated on open (``migrate`` does it explicitly). The database runs in WAL mode
with foreign keys on. Each write is one ``BEGIN IMMEDIATE ... COMMIT`` transaction run whole on
the store's writer thread, which owns the write connection; reads use a second connection on
a reader thread. ``BEGIN IMMEDIATE`` takes the file's write lock first, so writers in other
processes queue (up to ``busy_timeout``) and seqs stay gapless across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sqlite3
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from .._url import StoreUrl, parse_store_url
from .._validation import (
    check_append,
    check_aware_datetime,
    check_bootstrap,
    check_identifier,
    check_page,
    check_purge,
    check_run_filters,
    parse_position_cursor,
)
from ..errors import InvalidInput
from ..types import (
    AppendResult,
    FeedPage,
    OutboxRecord,
    OutboxStats,
    RunBootstrapInput,
    RunEventInput,
    RunEventPersisted,
    RunMetadata,
    RunSummary,
)
from . import _sqlite_ops as ops
from ._sqlite_conn import (
    SUPPORTED_OPTIONS,
    SQLiteOptions,
    Worker,
    applied_version_of,
    migrate_connection,
    parse_options,
    translate_error,
)

__all__ = ["SUPPORTED_OPTIONS", "SQLiteStore", "applied_version", "migrate", "open_sqlite_store"]

#: How often ``wait_for_outbox`` looks for commits made by other processes.
POLL_INTERVAL = 0.05

# Waiters of every open store of this process, by database path: a write through one store
# wakes relays waiting on another store of the same file without waiting for their poll.
_waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}


def _wake(path: str) -> None:
    waiters = _waiters.get(path)
    if not waiters:
        return
    try:
        current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    for loop, event in list(waiters):
        if loop is current:
            event.set()
        else:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(event.set)


async def open_sqlite_store(url: StoreUrl, options: dict[str, Any]) -> SQLiteStore:
    """Open (creating and migrating if needed) the SQLite store at ``url``; for ``open_store``."""
    return await SQLiteStore.open(parse_options(url, options))


def _options_for(url: str | StoreUrl, options: dict[str, Any]) -> SQLiteOptions:
    parsed = url if isinstance(url, StoreUrl) else parse_store_url(url)
    if parsed.scheme != "sqlite":
        raise InvalidInput(f"not a sqlite:// URL: {parsed.masked!r}", field="url")
    return parse_options(parsed, options)


async def migrate(url: str | StoreUrl, **options: Any) -> tuple[int, int]:
    """Create or upgrade the schema of the database at ``url``; return versions before, after."""
    settings = _options_for(url, options)
    worker = Worker(settings, "runstate-sqlite-migrate")
    try:
        return await worker.call(migrate_connection, settings.path)
    finally:
        await worker.stop()


async def applied_version(url: str | StoreUrl, **options: Any) -> int:
    """Return the schema version of the database at ``url``; 0 if absent or never migrated."""
    settings = _options_for(url, options)
    return await asyncio.to_thread(_read_applied_version, settings.path)


def _read_applied_version(path: str) -> int:
    if not os.path.isfile(path):
        return 0
    try:
        connection = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise translate_error(exc, path) from exc
    try:
        return applied_version_of(connection)
    except sqlite3.Error as exc:
        raise translate_error(exc, path) from exc
    finally:
        connection.close()


def _open_connection(connection: sqlite3.Connection) -> None:
    """A no-op job: running it makes the worker connect (and surface connection errors)."""


class SQLiteStore:
    """A ``RunStateStore``, ``RunCatalog`` and ``OutboxStore`` in one SQLite database file.

    Open it with ``open_store("sqlite:///path.db")`` or ``await SQLiteStore.open(options)``;
    close it with ``await store.close()``.
    """

    def __init__(self, options: SQLiteOptions, writer: Worker, reader: Worker) -> None:
        self.options = options
        self.path = options.path
        self._max_payload_bytes = options.max_payload_bytes
        self._writer = writer
        self._reader = reader
        self._closed = False
        # Stop the threads if the store is dropped unclosed; they close their connections.
        self._finalizer = weakref.finalize(self, _stop_workers, writer, reader)

    @classmethod
    async def open(cls, options: SQLiteOptions) -> SQLiteStore:
        """Connect, migrate the schema if needed, and return the open store."""
        writer = Worker(options, "runstate-sqlite-writer")
        reader = Worker(options, "runstate-sqlite-reader")
        try:
            await writer.call(migrate_connection, options.path)
            await reader.call(_open_connection)
        except BaseException:
            await asyncio.gather(writer.stop(), reader.stop())
            raise
        return cls(options, writer, reader)

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SQLiteStore {self.path!r} synchronous={self.options.synchronous} {state}>"

    async def close(self) -> None:
        """Finish the queued work, close both connections and end the threads."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        await asyncio.gather(self._writer.stop(), self._reader.stop())

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput("the store is closed")

    # -- the store contract --------------------------------------------------------------

    async def bootstrap_run_tx(self, input: RunBootstrapInput) -> AppendResult:
        """Atomically store a new run's metadata, its first events and their outbox records."""
        self._check_open()
        checked_metadata, checked_events = check_bootstrap(input, self._max_payload_bytes)
        result: AppendResult = await self._writer.write(
            ops.bootstrap, checked_metadata, checked_events, input
        )
        _wake(self.path)
        return result

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
        result: AppendResult = await self._writer.write(ops.append, run_id, checked, expected_seq)
        if result.appended:
            _wake(self.path)
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
        return await self._reader.call(ops.list_events, run_id, after_seq, limit)

    async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        """Return the run's metadata, or ``None`` if the run does not exist."""
        self._check_open()
        check_identifier(run_id, "run_id")
        return await self._reader.call(ops.get_metadata, run_id)

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
        return await self._reader.call(
            ops.list_runs, workflow, tenant_id, created_after, limit, offset
        )

    async def read_feed(self, *, cursor: str | None = None, limit: int = 500) -> FeedPage:
        """Return events of every run committed after ``cursor``, in position order.

        The cursor is the last position returned: positions are assigned under the
        database's write lock, so commits become visible in position order and no event
        ever appears behind a cursor already handed out.
        """
        self._check_open()
        after = parse_position_cursor(cursor, limit)
        events = await self._reader.call(ops.read_feed, after, limit)
        return FeedPage(events=events, cursor=str(events[-1].position) if events else str(after))

    async def feed_head(self) -> str:
        """Return a cursor at the current end of the feed, to follow only newer events."""
        self._check_open()
        return str(await self._reader.call(ops.head_position))

    # -- the outbox ------------------------------------------------------------------------

    async def claim_outbox_batch(
        self, *, owner: str, limit: int, lease_seconds: float
    ) -> list[OutboxRecord]:
        """Lease up to ``limit`` deliverable records to ``owner``, in per-run seq order."""
        self._check_open()
        check_identifier(owner, "owner")
        if type(limit) is not int:
            raise InvalidInput(f"must be an int, got {limit!r}", field="limit")
        if (
            isinstance(lease_seconds, bool)
            or not isinstance(lease_seconds, (int, float))
            or not math.isfinite(lease_seconds)
        ):
            raise InvalidInput(
                f"must be a finite number, got {lease_seconds!r}", field="lease_seconds"
            )
        if limit <= 0:
            return []
        return await self._writer.write(ops.claim, owner, limit, lease_seconds)

    async def mark_delivered(self, outbox_ids: Sequence[int], *, owner: str) -> int:
        """Record delivery of records leased by ``owner``; return how many were updated."""
        self._check_open()
        ids = _check_ids(outbox_ids)
        if not ids:
            return 0
        return await self._writer.write(ops.mark_delivered, ids, owner)

    async def mark_failed(
        self, outbox_id: int, *, owner: str, error: str, retry_at: datetime | None
    ) -> None:
        """Record a failed delivery: retry at ``retry_at``, or dead-letter when it is ``None``."""
        self._check_open()
        (outbox_id,) = _check_ids([outbox_id])
        if not isinstance(error, str):
            raise InvalidInput(f"must be a string, got {type(error).__name__}", field="error")
        check_aware_datetime(retry_at, "retry_at", optional=True)
        await self._writer.write(ops.mark_failed, outbox_id, owner, error, retry_at)

    async def release_outbox(self, outbox_ids: Sequence[int], *, owner: str) -> None:
        """Give back leased records undelivered, without counting an attempt."""
        self._check_open()
        ids = _check_ids(outbox_ids)
        if ids:
            await self._writer.write(ops.release, ids, owner)
        _wake(self.path)

    async def redrive_dead_letters(self, *, run_id: str | None = None) -> int:
        """Make dead-lettered records deliverable again; return how many."""
        self._check_open()
        check_identifier(run_id, "run_id", optional=True)
        count: int = await self._writer.write(ops.redrive, run_id)
        if count:
            _wake(self.path)
        return count

    async def purge_delivered(self, *, older_than: datetime, limit: int = 1000) -> int:
        """Delete up to ``limit`` records delivered before ``older_than``; return how many."""
        self._check_open()
        check_purge(older_than, limit)
        purged: int = await self._writer.write(ops.purge, older_than, limit)
        return purged

    async def outbox_stats(self) -> OutboxStats:
        """Summarize the outbox: pending, in flight, dead, delivered, oldest pending."""
        self._check_open()
        return await self._reader.call(ops.read, ops.stats)

    async def wait_for_outbox(self, timeout: float) -> None:
        """Return when new records may be claimable, or after ``timeout`` seconds.

        Writes through any store of this process wake the waiter at once; commits by other
        processes are noticed by polling ``PRAGMA data_version`` every ``POLL_INTERVAL``.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        event = asyncio.Event()
        entry = (loop, event)
        waiters = _waiters.setdefault(self.path, set())
        waiters.add(entry)
        try:
            baseline = await self._reader.call(ops.data_version)
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0 or event.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(POLL_INTERVAL, remaining))
                    return
                if self._closed or await self._reader.call(ops.data_version) != baseline:
                    return
        finally:
            waiters.discard(entry)
            if not waiters and _waiters.get(self.path) is waiters:
                del _waiters[self.path]


def _check_ids(outbox_ids: object) -> list[int]:
    if isinstance(outbox_ids, (str, bytes)) or not isinstance(outbox_ids, Sequence):
        raise InvalidInput(
            f"must be a sequence of ints, got {type(outbox_ids).__name__}", field="outbox_ids"
        )
    for outbox_id in outbox_ids:
        if type(outbox_id) is not int:
            raise InvalidInput(f"must be ints, got {outbox_id!r}", field="outbox_ids")
    return list(outbox_ids)


def _stop_workers(*workers: Worker) -> None:
    for worker in workers:
        worker.stop_now()
