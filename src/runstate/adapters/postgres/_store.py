"""``PostgresStore``: the RunStateStore and OutboxStore protocols on an asyncpg pool."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from ..._validation import (
    check_append,
    check_bootstrap,
    check_claim,
    check_failure,
    check_feed_limit,
    check_identifier,
    check_outbox_ids,
    check_page,
    check_purge,
    check_wait_timeout,
)
from ...errors import ConcurrencyConflict, RunAlreadyExists, RunNotFound
from ...tracing import current_trace_context, traced_write
from ...types import (
    AppendResult,
    FeedPage,
    OutboxRecord,
    OutboxStats,
    RunBootstrapInput,
    RunEventInput,
    RunEventPersisted,
    RunMetadata,
)
from .._base import StoreBase, first_occurrences
from .._decode import decode_one
from ._batch import (
    APPEND_TRACE_COUNTS,
    BOOTSTRAP_TRACE_COUNTS,
    AppendBatchCodec,
    BootstrapBatchCodec,
    KeptConnections,
    WriteBatcher,
)
from ._config import PostgresConfig
from ._errors import DRIVER_ERRORS, is_connection_loss, must_reconnect, translate_error, translated
from ._listen import NOTIFY_CHANNEL, OutboxListener, OutboxPoller
from ._migrate import migrate
from ._queries import schema_queries
from ._query import RunQueries
from ._replica import ReplicaReads
from ._rows import (
    RAW_TIMESTAMP_CODEC,
    append_result,
    event_rows,
    events_from_rows,
    feed_page,
    metadata_from_row,
    parse_feed_cursor,
    records_from_rows,
    stats_from_row,
)

T = TypeVar("T")


async def _keep_session(connection: Any) -> None:
    """Release a connection to the pool without asyncpg's reset query.

    asyncpg still rolls back an open transaction before calling this. The default reset
    (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) is a second round trip
    per operation, and this pool never leaves session state behind: every statement is
    autocommitted, LISTEN runs on its own connection, and locks are transaction-scoped.
    """


#: The widest ``limit`` a claim passes on: the claim function counts in 32-bit ints, and no
#: batch is ever that large.
_MAX_CLAIM = 2**31 - 1
#: Errors the driver raises while decoding a result whose row holds a value no Python type
#: can (a date past year 9999): the rows are read again with raw timestamps.
_RESULT_DECODE_ERRORS = (OverflowError, ValueError)


class PostgresStore(StoreBase, RunQueries):
    """A ``RunStateStore`` and ``OutboxStore`` on PostgreSQL: one round trip per write.

    Every statement names the schema itself and connections carry no session state, so the
    pool may go through a transaction-mode pooler (``pgbouncer=true``), where relays poll for
    new records instead of listening.
    """

    def __init__(self, config: PostgresConfig, pool: Any) -> None:
        self._config = config
        self._pool = pool
        # read_url (set by open): where list_runs, read_feed, feed_head and outbox_stats go
        # (with replica_reads=all, list_events and get_run_metadata_by_run_id too).
        self._replica: ReplicaReads | None = None
        self._all_reads_on_replica = config.read is not None and config.replica_reads == "all"
        self._q = schema_queries(config.schema)
        self._max_payload_bytes = config.max_payload_bytes
        self._acquire_timeout = config.command_timeout
        self._listener: OutboxListener | OutboxPoller
        if config.pgbouncer:
            self._listener = OutboxPoller(self._claimable)
        else:
            self._listener = OutboxListener(config.schema, self._connect_listener)
        # Group commit: writes that queue behind this many statements share the next one.
        in_flight = config.write_statements
        self._kept = KeptConnections(pool, min(in_flight, config.pool_size))
        # The batchers' statements run without retry: a lost write's outcome is unknown.
        self._bootstraps = WriteBatcher(
            self._run,
            action="bootstrap_run_tx",
            codec=BootstrapBatchCodec(self._q["bootstrap_batch"]),
            max_in_flight=in_flight,
            trace_sql=self._q["with_traces"].replace("{counts}", BOOTSTRAP_TRACE_COUNTS),
        )
        self._appends = WriteBatcher(
            self._run,
            action="append_and_enqueue_tx",
            codec=AppendBatchCodec(self._q["append_batch"]),
            max_in_flight=in_flight,
            trace_sql=self._q["with_traces"].replace("{counts}", APPEND_TRACE_COUNTS),
        )
        #: The database attributes of this store's spans (see ``runstate.tracing``).
        self.trace_attributes = {
            "db.system.name": "postgresql",
            "db.namespace": config.trace_namespace,
        }

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<PostgresStore {self._config.masked_url!r} schema={self.schema!r} {state}>"

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this store's tables."""
        return self._config.schema

    @classmethod
    async def open(cls, config: PostgresConfig) -> PostgresStore:
        """Create the pool, migrate the schema if needed, and return the open store."""
        with translated(config.raw_url, "connecting", connecting=True):
            pool = await asyncpg.create_pool(
                config.dsn,
                min_size=1,
                max_size=config.pool_size,
                reset=_keep_session,
                **config.connect_kwargs(),
            )
        try:
            with translated(config.raw_url, "migrating", schema=config.schema):
                async with pool.acquire(timeout=config.connect_timeout) as connection:
                    await migrate(connection, config.schema)
            store = cls(config, pool)
            if config.read is not None:
                reads = ReplicaReads.open(config.read, store._on_primary, _keep_session)
                store._replica = await reads
        except BaseException:
            pool.terminate()
            raise
        return store

    async def _on_primary(self, action: str, work: Callable[[Any], Awaitable[T]]) -> T:
        return await self._run(action, work, retry=True)

    async def _connect_listener(self) -> Any:
        return await asyncpg.connect(self._config.dsn, **self._config.connect_kwargs())

    async def _close(self) -> None:
        """Close the LISTEN connection and the pool."""
        await self._listener.close()
        await self._kept.close()
        if self._replica is not None:
            await self._replica.close()
        try:
            await asyncio.wait_for(self._pool.close(), 10.0)
        except (*DRIVER_ERRORS,):
            self._pool.terminate()

    async def _run(
        self,
        action: str,
        work: Callable[[Any], Awaitable[T]],
        *,
        retry: bool = False,
    ) -> T:
        """Run ``work`` on a kept or pooled connection; reads get one retry after a lost
        connection."""
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            try:
                connection = self._kept.take()
                if connection is None:
                    connection = await self._acquire()
                kept = False
                try:
                    result = await work(connection)
                    kept = self._kept.keep(connection)
                    return result
                except DRIVER_ERRORS as exc:
                    # Never hand on a connection in an unknown protocol state (the pool sends
                    # no reset query, see _keep_session) or on a server fenced read-only. Not
                    # timeouts or cancellations: asyncpg cancels the statement server-side.
                    if must_reconnect(exc):
                        connection.terminate()
                    raise
                finally:
                    if not kept:
                        await self._kept.release(connection)
            except DRIVER_ERRORS as exc:
                if attempt + 1 < attempts and is_connection_loss(exc):
                    continue
                raise translate_error(
                    exc, self._config.raw_url, action, self._config.schema
                ) from exc
        raise AssertionError("unreachable")

    async def _acquire(self) -> Any:
        """A connection from the pool, counted as waiting (see ``KeptConnections.waiting``)."""
        self._kept.waiting += 1
        try:
            # asyncio.timeout costs one timer; acquire(timeout=...) wraps the wait in an
            # extra task per call.
            async with asyncio.timeout(self._acquire_timeout):
                return await self._pool.acquire()
        finally:
            self._kept.waiting -= 1

    # -- writes ------------------------------------------------------------------------

    @traced_write("bootstrap_run_tx")
    async def bootstrap_run_tx(self, input: RunBootstrapInput) -> AppendResult:
        """Atomically store a new run's metadata, its first events and their outbox records."""
        self._check_open()
        checked_metadata, events = check_bootstrap(input, self._max_payload_bytes)
        metadata = checked_metadata.metadata
        firsts = first_occurrences(events)
        args = (
            metadata.run_id,
            metadata.workflow,
            metadata.workflow_version,
            metadata.tenant_id,
            metadata.parent_run_id,
            checked_metadata.input_json,
            checked_metadata.labels_json,
            # In UTC (checked), so the text always parses to the same instant.
            checked_metadata.created_at.isoformat(),
            metadata.schema_version,
            event_rows([events[index] for index in firsts]),
        )
        row = await self._bootstraps.submit(metadata.run_id, args, current_trace_context())
        if row["o_code"] == "RUN_ALREADY_EXISTS":
            raise RunAlreadyExists(metadata.run_id, same_request=row["o_same_request"])
        return append_result(
            metadata.run_id, events, firsts, row["o_positions"], len(firsts), row["o_recorded_at"]
        )

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
        firsts = first_occurrences(checked)
        args = (run_id, expected_seq, event_rows([checked[index] for index in firsts]))
        row = await self._appends.submit(run_id, args, current_trace_context())
        code = row["o_code"]
        if code == "RUN_NOT_FOUND":
            raise RunNotFound(run_id)
        if code == "CONCURRENCY_CONFLICT":
            assert expected_seq is not None
            raise ConcurrencyConflict(
                run_id, expected_seq=expected_seq, actual_seq=row["o_last_seq"]
            )
        # o_appended numbers the candidates we sent (1-based); map them back to the call.
        appended = [firsts[index - 1] for index in row["o_appended"]]
        return append_result(
            run_id, checked, appended, row["o_positions"], row["o_last_seq"], row["o_recorded_at"]
        )

    # -- reads ------------------------------------------------------------------------

    async def _read(self, action: str, sql: str, *args: Any, replica: bool = False) -> list[Any]:
        """Fetch a read's rows (on the read_url server with ``replica``); reads get one retry
        after a lost connection.

        When the driver cannot decode a row (a date past year 9999, written outside
        runstate), the whole result fails in the driver: the rows are read again with raw
        timestamps, so that the decoders find the bad row and the others are read.
        """

        async def work(connection: Any) -> list[Any]:
            rows: list[Any] = await connection.fetch(sql, *args)
            return rows

        run = self._replica.run if replica and self._replica is not None else self._on_primary
        try:
            return await run(action, work)
        except _RESULT_DECODE_ERRORS:
            return await run(action, _raw_timestamps(sql, args))

    async def list_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[RunEventPersisted]:
        """Return the run's events with ``seq > after_seq`` in seq order, at most ``limit``."""
        self._check_open()
        check_identifier(run_id, "run_id")
        check_page(after_seq, limit)
        sql, on_replica = self._q["list_events"], self._all_reads_on_replica
        rows = await self._read("list_events", sql, run_id, after_seq, limit, replica=on_replica)
        return events_from_rows(rows, skip=False)

    async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        """Return the run's metadata, or ``None`` if the run does not exist."""
        self._check_open()
        check_identifier(run_id, "run_id")
        sql, on_replica = self._q["get_metadata"], self._all_reads_on_replica
        rows = await self._read("get_run_metadata_by_run_id", sql, run_id, replica=on_replica)
        return decode_one(rows[0], metadata_from_row, run_id) if rows else None

    # -- catalog -----------------------------------------------------------------------

    async def read_feed(self, *, cursor: str | None = None, limit: int = 500) -> FeedPage:
        """Return events of every run committed after ``cursor``, in commit-safe order."""
        self._check_open()
        check_feed_limit(limit)
        after = parse_feed_cursor(cursor)
        args = (after[0], after[1], limit)
        rows = await self._read("read_feed", self._q["read_feed"], *args, replica=True)
        return feed_page(rows, after)

    async def feed_head(self) -> str:
        """Return a cursor at the current end of the feed, to follow only newer events."""
        self._check_open()
        sql = self._q["feed_head"]

        async def work(connection: Any) -> str:
            return str(await connection.fetchval(sql))

        run = self._replica.run if self._replica is not None else self._on_primary
        return f"{await run('feed_head', work)}:0"

    # -- outbox ------------------------------------------------------------------------

    async def claim_outbox_batch(
        self, *, owner: str, limit: int, lease_seconds: float
    ) -> list[OutboxRecord]:
        """Lease up to ``limit`` deliverable records to ``owner``, in per-run seq order.

        A record whose event cannot be read back is dead-lettered, with the reason as its
        error, and its run's later records are released: the run waits behind it as behind
        any dead letter, and the other runs go on.
        """
        self._check_open()
        check_claim(owner, limit, lease_seconds)
        if limit == 0:
            return []
        sql = self._q["claim"]
        args = (owner, min(limit, _MAX_CLAIM), float(lease_seconds))

        async def work(connection: Any) -> list[Any]:
            rows: list[Any] = await connection.fetch(sql, *args)
            return rows

        try:
            rows = await self._run("claim_outbox_batch", work)
        except _RESULT_DECODE_ERRORS:
            # The leases are taken: read what this owner holds again, with raw timestamps.
            again = _raw_timestamps(self._q["claimed_by_owner"], (owner,))
            rows = await self._run("claim_outbox_batch", again)
        records, unreadable = records_from_rows(rows)
        if unreadable:
            await self._set_aside(owner, rows, records, unreadable)
        return records

    async def _set_aside(
        self,
        owner: str,
        rows: list[Any],
        records: list[OutboxRecord],
        unreadable: list[tuple[int, str]],
    ) -> None:
        """Dead-letter the unreadable records of a claim and release the rest of their runs."""
        kept = {record.outbox_id for record in records}
        dead = {outbox_id for outbox_id, _ in unreadable}
        held = [row["outbox_id"] for row in rows if row["outbox_id"] not in kept | dead]
        for outbox_id, error in unreadable:
            await self.mark_failed(outbox_id, owner=owner, error=error, retry_at=None)
        if held:
            await self.release_outbox(held, owner=owner)

    async def mark_delivered(self, outbox_ids: Sequence[int], *, owner: str) -> int:
        """Record delivery of records leased by ``owner``; return how many were updated."""
        self._check_open()
        ids = check_outbox_ids(outbox_ids, owner)
        sql = self._q["mark_delivered"]

        async def work(connection: Any) -> int:
            return int(await connection.fetchval(sql, ids, owner))

        return await self._run("mark_delivered", work)

    async def mark_failed(
        self, outbox_id: int, *, owner: str, error: str, retry_at: datetime | None
    ) -> None:
        """Record a failed delivery: retry at ``retry_at``, or dead-letter when it is ``None``."""
        self._check_open()
        text = check_failure(outbox_id, owner, error, retry_at)
        sql = self._q["mark_failed"]

        async def work(connection: Any) -> None:
            await connection.execute(sql, outbox_id, owner, text, retry_at)

        await self._run("mark_failed", work)

    async def release_outbox(self, outbox_ids: Sequence[int], *, owner: str) -> None:
        """Give back leased records undelivered, without counting an attempt."""
        self._check_open()
        ids = check_outbox_ids(outbox_ids, owner)
        await self._update_and_notify("release_outbox", self._q["release"], ids, owner)

    async def redrive_dead_letters(self, *, run_id: str | None = None) -> int:
        """Make dead-lettered records deliverable again; return how many."""
        self._check_open()
        check_identifier(run_id, "run_id", optional=True)
        return await self._update_and_notify("redrive_dead_letters", self._q["redrive"], run_id)

    async def _update_and_notify(self, action: str, sql: str, *args: object) -> int:
        statement, schema = self._q["notify"], self.schema

        async def work(connection: Any) -> int:
            count = int(await connection.fetchval(sql, *args))
            if count:
                # After the autocommitted update, so a woken relay sees the change.
                await connection.execute(statement, NOTIFY_CHANNEL, schema)
            return count

        return await self._run(action, work)

    async def outbox_stats(self) -> OutboxStats:
        """Summarize the outbox: pending, in flight, dead, delivered, oldest pending."""
        self._check_open()
        (row,) = await self._read("outbox_stats", self._q["stats"], replica=True)
        return stats_from_row(row)

    async def purge_delivered(self, *, older_than: datetime, limit: int = 1000) -> int:
        """Delete up to ``limit`` records delivered before ``older_than``; return how many."""
        self._check_open()
        check_purge(older_than, limit)
        sql = self._q["purge"]

        async def work(connection: Any) -> int:
            return int(await connection.fetchval(sql, older_than, limit))

        return await self._run("purge_delivered", work)

    async def wait_for_outbox(self, timeout: float) -> None:
        """Return when new records may be claimable, or after ``timeout`` seconds.

        LISTEN/NOTIFY wakes the waiter; with ``pgbouncer=true`` (no session, so no LISTEN)
        it polls for claimable records every ``OutboxPoller.interval`` seconds instead.
        """
        self._check_open()
        timeout = check_wait_timeout(timeout)
        with translated(self._config.raw_url, "wait_for_outbox", schema=self.schema):
            await self._listener.wait(timeout)

    async def _claimable(self) -> bool:
        sql = self._q["claimable"]

        async def work(connection: Any) -> bool:
            return bool(await connection.fetchval(sql))

        return await self._run("wait_for_outbox", work, retry=True)


def _raw_timestamps(sql: str, args: tuple[Any, ...]) -> Callable[[Any], Awaitable[list[Any]]]:
    """A read whose timestamps come back as raw microseconds (see ``RAW_TIMESTAMP_CODEC``)."""

    async def work(connection: Any) -> list[Any]:
        await connection.set_type_codec("timestamptz", **RAW_TIMESTAMP_CODEC)
        try:
            rows: list[Any] = await connection.fetch(sql, *args)
        finally:
            await connection.reset_type_codec("timestamptz", schema="pg_catalog")
        return rows

    return work
