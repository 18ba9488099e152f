"""Group commit for PostgreSQL: concurrent writes of one kind share one statement.

With many writers the Python client, not the server, is the limit on a small machine: each
round trip costs asyncio and asyncpg far more CPU than the write costs PostgreSQL. A lone
writer (nothing waiting, no statement out) sends its statement at once from its own task. Any
other write waits for the tasks that are ready in the same event-loop turn, then the waiting
writes go out together in at most
``max_in_flight`` statements (one round trip, one transaction, one commit each). The writes
waiting or in flight are balanced over the statements, and a batch smaller than its share
waits while another statement is out, so statements stay full and take turns: PostgreSQL runs
one while this process prepares the next. Back-to-back statements keep their pool connection
(``KeptConnections``). A write whose caller is cancelled before its statement goes out is
dropped, so nothing of it is written.

A statement carries one write per run: ``runstate_bootstrap_batch`` and
``runstate_append_batch`` write the whole batch set-based (one INSERT per table). A second
write to a run waits, in call order, for a later statement. Each item keeps its own outcome:
the functions report "already exists", "not found" and "conflict" per run and write nothing
for those runs, so one item's refusal never touches another's rows. A statement that fails (a
lost connection, say) fails every item in it with its own ``StoreUnavailable``, exactly as a
single write would.

Deadlocks are impossible by construction:

- items are sorted by run id, and the functions lock run rows in that order;
- every statement first takes the schema's shared advisory lock, before any row lock. A relay
  registering as a watcher takes that lock exclusively; a writer waiting behind it holds nothing
  yet, so the relay never waits, even indirectly, for a writer that waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg

from ..._json import compact
from ...errors import StoreUnavailable
from .._base import copy_error

Runner = Callable[[str, Callable[[Any], Awaitable[list[Any]]]], Awaitable[list[Any]]]

Trace = tuple[str, str | None]
Item = tuple[str, tuple[Any, ...], "asyncio.Future[Any]", Trace | None]


class BatchCodec(Protocol):
    """How one kind of write goes out as a statement, and how its rows come back.

    A statement carries at most one item per run id, sorted by run id.
    """

    def statement(self, items: list[tuple[Any, ...]]) -> tuple[str, list[Any]]:
        """The SQL and its arguments for the items' argument tuples, in this order."""

    def results(self, rows: list[Any], items: list[tuple[Any, ...]]) -> list[Any]:
        """One result row (or ``None`` when missing) per item, in the items' order."""


class BootstrapBatchCodec:
    """Sends a batch of bootstraps to ``runstate_bootstrap_batch``: set-based, one call.

    An item's arguments are one list, ready for JSON: run id, workflow, workflow version,
    tenant id, parent run id, input and labels (JSON text), created_at (ISO 8601), schema
    version, then the events as ``[event id, type, payload (JSON text), schema version,
    occurred_at (ISO 8601 or None)]`` lists (see ``event_rows``). ``sql`` is the named
    statement ``bootstrap_batch`` for the store's schema.
    """

    def __init__(self, sql: str) -> None:
        self._sql = sql

    def statement(self, items: list[tuple[Any, ...]]) -> tuple[str, list[Any]]:
        """The call and its one argument: the items as one JSON array."""
        return self._sql, [compact(items)]

    def results(self, rows: list[Any], items: list[tuple[Any, ...]]) -> list[Any]:
        """Per item: written (its positions) or refused (whether it was the same request)."""
        (row,) = rows
        positions = row["o_positions"]
        recorded_at = row["o_recorded_at"]
        same_request = row["o_same_request"]
        results: list[Any] = []
        start = 0
        for index, count in enumerate(row["o_counts"]):
            if count:
                results.append(
                    {
                        "o_code": "OK",
                        "o_positions": positions[start : start + count],
                        "o_recorded_at": recorded_at,
                        "o_same_request": None,
                    }
                )
                start += count
            elif same_request is None:
                results.append(None)  # the server said everything was written: cannot be
            else:
                results.append(
                    {
                        "o_code": "RUN_ALREADY_EXISTS",
                        "o_positions": None,
                        "o_recorded_at": None,
                        "o_same_request": same_request[index],
                    }
                )
        return results


class AppendBatchCodec:
    """Sends a batch of appends (one per run) to ``runstate_append_batch``: set-based.

    An item's arguments are one list, ready for JSON: run id, expected_seq, then the
    candidate events as ``event_rows`` builds them. ``sql`` is the named statement
    ``append_batch`` for the store's schema.
    """

    def __init__(self, sql: str) -> None:
        self._sql = sql

    def statement(self, items: list[tuple[Any, ...]]) -> tuple[str, list[Any]]:
        """The call and its one argument: the items as one JSON array."""
        return self._sql, [compact(items)]

    def results(self, rows: list[Any], items: list[tuple[Any, ...]]) -> list[Any]:
        """Per item: its code, last_seq, and the candidates written with their positions."""
        (row,) = rows
        candidates = row["o_candidates"]
        positions = row["o_positions"]
        recorded_at = row["o_recorded_at"]
        results: list[Any] = []
        start = 0
        for code, before, after in zip(
            row["o_codes"], row["o_last_seqs"], row["o_new_last_seqs"], strict=True
        ):
            count = after - before if code == "OK" else 0
            results.append(
                {
                    "o_code": code,
                    "o_last_seq": after if code == "OK" else before,
                    "o_appended": candidates[start : start + count],
                    "o_positions": positions[start : start + count],
                    "o_recorded_at": recorded_at,
                }
            )
            start += count
        if len(results) != len(items):
            raise StoreUnavailable("append_and_enqueue_tx: a result per run was expected")
        return results


def with_traces(
    template: str, sql: str, values: list[Any], items: list[Item]
) -> tuple[str, list[Any]]:
    """The batch statement ``sql`` wrapped to store each traced item's trace with its events.

    ``template`` (a ``with_traces`` statement, its ``{counts}`` filled in for the write) takes
    the write as a subquery and two more arrays, numbered after the write's own parameters:
    the traceparent and tracestate of each item in batch order (None where untraced). The
    write's rows come back unchanged, so the codec reads them as before.
    """
    first = len(values) + 1
    text = (
        template.replace("{write}", sql)
        .replace("{traceparents}", f"${first}")
        .replace("{tracestates}", f"${first + 1}")
    )
    traceparents = [None if item[3] is None else item[3][0] for item in items]
    tracestates = [None if item[3] is None else item[3][1] for item in items]
    return text, [*values, traceparents, tracestates]


#: ``{counts}`` of the ``with_traces`` statement: events written per run, from the result row.
BOOTSTRAP_TRACE_COUNTS = "w.o_counts"
APPEND_TRACE_COUNTS = (
    "ARRAY(SELECT d.after - d.before FROM unnest(w.o_new_last_seqs, w.o_last_seqs)"
    " WITH ORDINALITY AS d (after, before, i) ORDER BY d.i)"
)


class WriteBatcher:
    """Coalesces concurrent calls of one write function into shared statements."""

    def __init__(
        self,
        run: Runner,
        *,
        action: str,
        codec: BatchCodec,
        max_in_flight: int,
        max_batch: int = 32,
        trace_sql: str | None = None,
        lone_writer_at_once: bool = True,
    ) -> None:
        self._run = run
        # False only to observe the batching alone (tests/test_write_batcher.py).
        self._lone_writer_at_once = lone_writer_at_once
        self._trace_sql = trace_sql
        self._action = action
        self._codec = codec
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._pending: list[Item] = []
        self._in_flight = 0
        self._in_flight_items = 0
        self._runs_in_flight: set[str] = set()
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, run_id: str, args: tuple[Any, ...], trace: Trace | None = None) -> Any:
        """Write one item (``args`` for the codec) and return its result row.

        ``trace``, a W3C (traceparent, tracestate), is stored with the item's new events.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._lone_writer_at_once and not self._pending and not self._in_flight:
            # A lone writer: nothing to share a statement with, so it writes in its own task
            # at once, without a task, a flush or a loop iteration in between (a quarter of
            # its client CPU). Writers arriving meanwhile queue and go out when it ends.
            batch = [(run_id, args, future, trace)]
            self._in_flight = 1
            self._in_flight_items = 1
            self._runs_in_flight.add(run_id)
            try:
                await self._write(batch)
            except BaseException:
                if future.done() and not future.cancelled():
                    future.exception()  # the caller gets the exception itself: retrieved
                raise
            return future.result()
        self._pending.append((run_id, args, future, trace))
        # Flush after the tasks that are ready now have run: callers woken together (by the
        # batch that just finished) then share one statement instead of the first one taking
        # a statement of its own.
        self._schedule_flush()
        return await future

    @property
    def idle(self) -> bool:
        """Nothing waits and no statement is out."""
        return not self._pending and not self._in_flight

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._start_batches()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _start_batches(self) -> None:
        if any(item[2].done() for item in self._pending):
            # A caller cancelled before its write went out: it is never sent, so nothing of
            # it is written and the cancellation means what it says.
            self._pending = [item for item in self._pending if not item[2].done()]
        while self._pending and self._in_flight < self._max_in_flight:
            # Balance the writes waiting or in flight over all the statements, and hold a
            # batch smaller than its share while another statement is out (that statement's
            # end flushes again). Statements then stay full and take turns: the server runs
            # one while this process builds the next, instead of both waiting for each other.
            load = len(self._pending) + self._in_flight_items
            share = min(self._max_batch, -(-load // self._max_in_flight))
            if self._in_flight and len(self._pending) < share:
                return
            batch = self._take(share)
            if not batch:
                return  # everything waiting is for runs that statements are writing now
            self._in_flight += 1
            self._in_flight_items += len(batch)
            task = asyncio.create_task(self._write(batch))
            # Keep a reference: the event loop holds tasks only weakly.
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self, size: int) -> list[Item]:
        # One item per run id per statement, and none for a run another statement is still
        # writing: a later write to a run waits (in call order) for a later statement, so
        # concurrent statements can never commit one run's writes out of order.
        batch: list[Item] = []
        rest: list[Item] = []
        taken = self._runs_in_flight
        for item in self._pending:
            if len(batch) < size and item[0] not in taken:
                taken.add(item[0])
                batch.append(item)
            else:
                rest.append(item)
        self._pending = rest
        return batch

    async def _write(self, batch: list[Item]) -> None:
        try:
            ordered = sorted(batch, key=lambda item: item[0])
            arguments = [item[1] for item in ordered]
            sql, values = self._codec.statement(arguments)
            if self._trace_sql is not None and any(item[3] for item in ordered):
                sql, values = with_traces(self._trace_sql, sql, values, ordered)

            async def work(connection: Any) -> list[Any]:
                rows: list[Any] = await connection.fetch(sql, *values)
                return rows

            try:
                rows = await self._run(self._action, work)
            except BaseException as exc:
                for _, _, future, _ in ordered:
                    if not future.done():
                        future.set_exception(copy_error(exc))
                if not isinstance(exc, Exception):
                    raise
                return
            results = self._codec.results(rows, arguments)
            for (_, _, future, _), row in zip(ordered, results, strict=True):
                if future.done():
                    continue
                if row is None:
                    future.set_exception(
                        StoreUnavailable(f"{self._action}: no result for a batched write")
                    )
                else:
                    future.set_result(row)
        finally:
            self._in_flight -= 1
            self._in_flight_items -= len(batch)
            self._runs_in_flight.difference_update(item[0] for item in batch)
            if self._pending:
                # Deferred like a submit: the callers just woken join the next statement.
                # Nothing waiting (the lone writer's usual case) costs no loop turn.
                self._schedule_flush()


class KeptConnections:
    """Pool connections the store keeps between back-to-back operations.

    Handing a connection back to asyncpg's pool and taking it again costs the client more
    CPU than a small statement's whole round trip (about 120 µs against 60 here), so the
    store's operations reuse what they hold. A connection goes back to the pool when nobody
    has used one for ``linger`` seconds, at once when an operation is waiting for the pool
    (``waiting``), and on close; at most ``limit`` are kept.
    """

    def __init__(self, pool: Any, limit: int, *, linger: float = 0.5) -> None:
        self._pool = pool
        self._limit = limit
        self._linger = linger
        self._idle: list[Any] = []
        self._releases: set[asyncio.Task[None]] = set()
        self._closed = False
        self._last_kept = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        #: Operations waiting in the pool's ``acquire`` now: a finished one hands its
        #: connection back instead of keeping it, so nobody waits on an idle kept connection.
        self.waiting = 0

    def take(self) -> Any:
        """A kept connection that is still open, or ``None``."""
        while self._idle:
            connection = self._idle.pop()
            if _is_open(connection):
                return connection
            self._release_soon(connection)
        return None

    def keep(self, connection: Any) -> bool:
        """Keep a connection that just served an operation; ``False`` if it must go back."""
        if self._closed or self.waiting or len(self._idle) >= self._limit:
            return False
        self._idle.append(connection)
        loop = asyncio.get_running_loop()
        self._last_kept = loop.time()
        if self._expiry is None:
            self._expiry = loop.call_later(self._linger, self._expire)
        return True

    def _expire(self) -> None:
        # One timer for all of them, re-armed while connections keep being used: arming a
        # timer per operation would cost what keeping the connection saves.
        self._expiry = None
        if not self._idle:
            return
        loop = asyncio.get_running_loop()
        left = self._last_kept + self._linger - loop.time()
        if left > 0:
            self._expiry = loop.call_later(left, self._expire)
        else:
            self.release_all()

    def release_all(self) -> None:
        """Hand every kept connection back to the pool."""
        while self._idle:
            self._release_soon(self._idle.pop())

    async def close(self) -> None:
        """Hand everything back and keep nothing more; the pool can close afterwards."""
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.release_all()
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    def _release_soon(self, connection: Any) -> None:
        task = asyncio.get_running_loop().create_task(self.release(connection))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def release(self, connection: Any) -> None:
        """Hand one connection back to the pool at once, kept or not."""
        # On failure the pool has already terminated the broken connection and will open a
        # new one; the caller's own outcome (result or error) is what matters.
        with contextlib.suppress(Exception):
            await self._pool.release(connection)


def _is_open(connection: Any) -> bool:
    try:
        return not connection.is_closed()
    except asyncpg.InterfaceError:
        # Its connection was lost and the pool took it back already.
        return False
