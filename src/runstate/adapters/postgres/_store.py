"""``PostgresStore``: the RunStateStore and OutboxStore protocols on an asyncpg pool."""

from __future__ import annotations

import asyncio
import json
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
    check_run_filters,
    check_wait_timeout,
)
from ...errors import ConcurrencyConflict, RunAlreadyExists, RunNotFound
from ...types import (
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
from .._base import StoreBase, first_occurrences
from ._batch import AppendBatchCodec, BootstrapBatchCodec, KeptConnections, WriteBatcher
from ._config import PostgresConfig, quote_ident
from ._errors import DRIVER_ERRORS, is_connection_loss, to_store_unavailable, translated
from ._listen import NOTIFY_CHANNEL, OutboxListener
from ._migrate import migrate
from ._queries import Q
from ._rows import (
    append_result,
    event_arrays,
    event_from_row,
    feed_page,
    metadata_from_row,
    parse_feed_cursor,
    record_from_row,
    stats_from_row,
    summary_from_row,
)

T = TypeVar("T")


async def _init_connection(connection: Any) -> None:
    # json (not jsonb) columns hold the exact text we wrote; decode it with the same library
    # that validated it, so big ints, 5e-324 and key order come back unchanged.
    await connection.set_type_codec(
        "json", encoder=_encode_json, decoder=json.loads, schema="pg_catalog"
    )


async def _keep_session(connection: Any) -> None:
    """Release a connection to the pool without asyncpg's reset query.

    asyncpg still rolls back an open transaction before calling this. The default reset
    (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) is a second round trip
    per operation, and this pool never leaves session state behind: every statement is
    autocommitted, LISTEN runs on its own connection, and locks are transaction-scoped.
    """


def _encode_json(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, allow_nan=False)


def connect_kwargs(config: PostgresConfig) -> dict[str, Any]:
    """The asyncpg keyword arguments shared by the pool and the LISTEN connection."""
    return {
        "server_settings": {"search_path": quote_ident(config.schema)},
        "statement_cache_size": config.statement_cache_size,
        "command_timeout": config.command_timeout,
        "timeout": config.connect_timeout,
    }


class PostgresStore(StoreBase):
    """A ``RunStateStore`` and ``OutboxStore`` on PostgreSQL: one round trip per write."""

    def __init__(self, config: PostgresConfig, pool: Any) -> None:
        self._config = config
        self._pool = pool
        self._max_payload_bytes = config.max_payload_bytes
        self._acquire_timeout = config.command_timeout
        self._listener = OutboxListener(config.schema, self._connect_listener)
        # Group commit: writes that queue behind this many statements share the next one.
        in_flight = config.write_statements
        self._kept = KeptConnections(pool, min(in_flight, config.pool_size - 1))
        self._bootstraps = WriteBatcher(
            self._run_write,
            action="bootstrap_run_tx",
            codec=BootstrapBatchCodec(),
            max_in_flight=in_flight,
            on_idle=self._writes_idle,
        )
        self._appends = WriteBatcher(
            self._run_write,
            action="append_and_enqueue_tx",
            codec=AppendBatchCodec(),
            max_in_flight=in_flight,
            on_idle=self._writes_idle,
        )

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this store's tables."""
        return self._config.schema

    @classmethod
    async def open(cls, config: PostgresConfig) -> PostgresStore:
        """Create the pool, migrate the schema if needed, and return the open store."""
        with translated(config.raw_url, "connecting"):
            pool = await asyncpg.create_pool(
                config.dsn,
                min_size=1,
                max_size=config.pool_size,
                init=_init_connection,
                reset=_keep_session,
                **connect_kwargs(config),
            )
        try:
            with translated(config.raw_url, "migrating"):
                async with pool.acquire(timeout=config.connect_timeout) as connection:
                    await migrate(connection, config.schema)
        except BaseException:
            pool.terminate()
            raise
        return cls(config, pool)

    async def _connect_listener(self) -> Any:
        return await asyncpg.connect(self._config.dsn, **connect_kwargs(self._config))

    async def _close(self) -> None:
        """Close the LISTEN connection and the pool."""
        await self._listener.close()
        await self._kept.close()
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
        keep: bool = False,
    ) -> T:
        """Run ``work`` on a pooled connection; reads get one retry after a lost connection."""
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            try:
                connection = self._kept.take() if keep else None
                if connection is None:
                    # asyncio.timeout costs one timer; acquire(timeout=...) wraps the wait in
                    # an extra task per call.
                    async with asyncio.timeout(self._acquire_timeout):
                        connection = await self._pool.acquire()
                kept = False
                try:
                    result = await work(connection)
                    kept = keep and self._kept.keep(connection)
                    return result
                except asyncpg.exceptions.InternalClientError:
                    # A client-side protocol error leaves the connection in an unknown state;
                    # the pool no longer sends the reset query that would have failed on it
                    # (see _keep_session), so never hand it on. Timeouts and cancellations
                    # are not ended this way: asyncpg cancels the statement on the server
                    # and waits for that before the connection is reused.
                    connection.terminate()
                    raise
                finally:
                    if not kept:
                        await self._kept.release(connection)
            except DRIVER_ERRORS as exc:
                if attempt + 1 < attempts and is_connection_loss(exc):
                    continue
                raise to_store_unavailable(exc, self._config.raw_url, action) from exc
        raise AssertionError("unreachable")

    async def _run_write(self, action: str, work: Callable[[Any], Awaitable[T]]) -> T:
        """``_run`` for the write batchers: back-to-back statements keep their connection."""
        return await self._run(action, work, keep=True)

    def _writes_idle(self) -> None:
        if self._bootstraps.idle and self._appends.idle:
            self._kept.release_all()

    # -- writes ------------------------------------------------------------------------

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
            metadata.created_at,
            metadata.schema_version,
            *event_arrays([events[index] for index in firsts]),
        )
        row = await self._bootstraps.submit(metadata.run_id, args)
        if row["o_code"] == "RUN_ALREADY_EXISTS":
            raise RunAlreadyExists(metadata.run_id, same_request=row["o_same_request"])
        return append_result(
            metadata.run_id, events, firsts, row["o_positions"], len(firsts), row["o_recorded_at"]
        )

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
        args = (run_id, expected_seq, *event_arrays([checked[index] for index in firsts]))
        row = await self._appends.submit(run_id, args)
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

    # -- reads -------------------------------------------------------------------------

    async def list_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[RunEventPersisted]:
        """Return the run's events with ``seq > after_seq`` in seq order, at most ``limit``."""
        self._check_open()
        check_identifier(run_id, "run_id")
        check_page(after_seq, limit)

        async def work(connection: Any) -> list[Any]:
            rows: list[Any] = await connection.fetch(Q["list_events"], run_id, after_seq, limit)
            return rows

        rows = await self._run("list_events", work, retry=True)
        return [event_from_row(row) for row in rows]

    async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        """Return the run's metadata, or ``None`` if the run does not exist."""
        self._check_open()
        check_identifier(run_id, "run_id")

        async def work(connection: Any) -> Any:
            return await connection.fetchrow(Q["get_metadata"], run_id)

        row = await self._run("get_run_metadata_by_run_id", work, retry=True)
        return None if row is None else metadata_from_row(row)

    # -- catalog -----------------------------------------------------------------------

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
        args = (workflow, tenant_id, created_after, limit, offset)

        async def work(connection: Any) -> list[Any]:
            rows: list[Any] = await connection.fetch(Q["list_runs"], *args)
            return rows

        rows = await self._run("list_runs", work, retry=True)
        return [summary_from_row(row) for row in rows]

    async def read_feed(self, *, cursor: str | None = None, limit: int = 500) -> FeedPage:
        """Return events of every run committed after ``cursor``, in commit-safe order."""
        self._check_open()
        check_feed_limit(limit)
        after = parse_feed_cursor(cursor)

        async def work(connection: Any) -> list[Any]:
            rows: list[Any] = await connection.fetch(Q["read_feed"], after[0], after[1], limit)
            return rows

        rows = await self._run("read_feed", work, retry=True)
        return feed_page(rows, after)

    async def feed_head(self) -> str:
        """Return a cursor at the current end of the feed, to follow only newer events."""
        self._check_open()

        async def work(connection: Any) -> str:
            return str(await connection.fetchval(Q["feed_head"]))

        return f"{await self._run('feed_head', work, retry=True)}:0"

    # -- outbox ------------------------------------------------------------------------

    async def claim_outbox_batch(
        self, *, owner: str, limit: int, lease_seconds: float
    ) -> list[OutboxRecord]:
        """Lease up to ``limit`` deliverable records to ``owner``, in per-run seq order."""
        self._check_open()
        check_claim(owner, limit, lease_seconds)
        if limit == 0:
            return []

        async def work(connection: Any) -> list[Any]:
            rows: list[Any] = await connection.fetch(Q["claim"], owner, limit, float(lease_seconds))
            return rows

        rows = await self._run("claim_outbox_batch", work)
        return [record_from_row(row) for row in rows]

    async def mark_delivered(self, outbox_ids: Sequence[int], *, owner: str) -> int:
        """Record delivery of records leased by ``owner``; return how many were updated."""
        self._check_open()
        ids = check_outbox_ids(outbox_ids, owner)

        async def work(connection: Any) -> int:
            return int(await connection.fetchval(Q["mark_delivered"], ids, owner))

        return await self._run("mark_delivered", work)

    async def mark_failed(
        self, outbox_id: int, *, owner: str, error: str, retry_at: datetime | None
    ) -> None:
        """Record a failed delivery: retry at ``retry_at``, or dead-letter when it is ``None``."""
        self._check_open()
        text = check_failure(outbox_id, owner, error, retry_at)

        async def work(connection: Any) -> None:
            await connection.execute(Q["mark_failed"], outbox_id, owner, text, retry_at)

        await self._run("mark_failed", work)

    async def release_outbox(self, outbox_ids: Sequence[int], *, owner: str) -> None:
        """Give back leased records undelivered, without counting an attempt."""
        self._check_open()
        ids = check_outbox_ids(outbox_ids, owner)
        await self._update_and_notify("release_outbox", Q["release"], ids, owner)

    async def redrive_dead_letters(self, *, run_id: str | None = None) -> int:
        """Make dead-lettered records deliverable again; return how many."""
        self._check_open()
        check_identifier(run_id, "run_id", optional=True)
        return await self._update_and_notify("redrive_dead_letters", Q["redrive"], run_id)

    async def _update_and_notify(self, action: str, sql: str, *args: object) -> int:
        async def work(connection: Any) -> int:
            count = int(await connection.fetchval(sql, *args))
            if count:
                # After the autocommitted update, so a woken relay sees the change.
                await connection.execute(Q["notify"], NOTIFY_CHANNEL)
            return count

        return await self._run(action, work)

    async def outbox_stats(self) -> OutboxStats:
        """Summarize the outbox: pending, in flight, dead, delivered, oldest pending."""
        self._check_open()

        async def work(connection: Any) -> Any:
            return await connection.fetchrow(Q["stats"])

        return stats_from_row(await self._run("outbox_stats", work, retry=True))

    async def purge_delivered(self, *, older_than: datetime, limit: int = 1000) -> int:
        """Delete up to ``limit`` records delivered before ``older_than``; return how many."""
        self._check_open()
        check_purge(older_than, limit)

        async def work(connection: Any) -> int:
            return int(await connection.fetchval(Q["purge"], older_than, limit))

        return await self._run("purge_delivered", work)

    async def wait_for_outbox(self, timeout: float) -> None:
        """Return when new records may be claimable, or after ``timeout`` seconds."""
        self._check_open()
        timeout = check_wait_timeout(timeout)
        with translated(self._config.raw_url, "wait_for_outbox"):
            await self._listener.wait(timeout)
