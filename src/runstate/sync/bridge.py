"""Any async store as a synchronous one: its coroutines run on a private event loop that the
calling threads take turns running.

``runstate.sync.open_store`` opens PostgreSQL this way, and every scheme registered with
``register_store_scheme``: the async adapter is the one source of its SQL, error translation,
group commit and LISTEN/NOTIFY, and the synchronous store only carries calls to it.

Why callers run the loop themselves instead of a dedicated loop thread: a lone caller then
pays no thread hand-off at all (measured on PostgreSQL: 0.94x the async store's appends/s
with one thread, against 0.85x through a loop thread; see docs/design.md, decision 8).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from collections.abc import Coroutine, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from .. import store as async_store
from .._open import open_store as open_async_store
from ..adapters._base import SyncStoreBase
from ..errors import StoreClosed, StoreUnavailable
from ..types import (
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

T = TypeVar("T")

#: The longest the calls of a burst wait for the callers of the last burst to join them.
MAX_LINGER = 0.0005


class _Call:
    """One coroutine handed to the loop: its outcome, and the lock its thread waits on."""

    __slots__ = ("done", "outcome", "ready")

    def __init__(self) -> None:
        self.done = False
        self.outcome: tuple[bool, Any] = (False, None)
        self.ready = threading.Lock()
        self.ready.acquire()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopRunner:
    """A private event loop, run by the threads that need it, one at a time.

    A caller that finds nobody running the loop runs it itself until its own coroutine is
    done. Callers that arrive meanwhile hand their coroutine to the running loop and wait;
    when the runner's coroutine is done, the loop passes to a caller whose coroutine is still
    in flight. Between calls nobody runs it. A caller already inside an event loop (a
    notebook, say) has its coroutine run by a helper thread instead.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._mutex = threading.Lock()
        self._runner: _Call | None = None
        self._in_flight: list[_Call] = []
        self._helpers: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        # Coroutines handed to the running loop, and whether a wake-up for them is pending:
        # callers that arrive together cost the loop one wake-up and start in one turn (so
        # the async store's group commit sees them together).
        self._handed: collections.deque[tuple[Coroutine[Any, Any, Any], _Call]] = (
            collections.deque()
        )
        self._wake_pending = False
        # The most calls in flight at once in the last burst (between two moments nobody
        # ran the loop) and in this one; while ``_lingering``, handed calls wait for the
        # expected number of them (or ``MAX_LINGER``) before they start.
        self._expected = 1
        self._peak = 0
        self._lingering = False

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and return its result (or raise its exception)."""
        running = _running_loop()
        if running is self._loop:
            coroutine.close()
            raise RuntimeError("a synchronous store was called from inside its own event loop")
        if running is not None:
            return self._helper_pool().submit(self.run, coroutine).result()
        call = _Call()
        wake = linger = False
        with self._mutex:
            if self._closed:
                coroutine.close()
                raise StoreClosed()
            lead = self._runner is None
            self._in_flight.append(call)
            self._peak = max(self._peak, len(self._in_flight))
            if lead:
                self._runner = call
                # Callers released together by the last burst come back one by one (they
                # take turns holding the GIL): let them gather, so that the async store's
                # group commit gets them in one statement rather than in halves.
                self._lingering = linger = self._expected > 1
                if linger:
                    self._handed.append((coroutine, call))
            else:
                self._handed.append((coroutine, call))
                if self._lingering:
                    wake = len(self._handed) >= self._expected
                else:
                    wake = not self._wake_pending
                self._wake_pending = self._wake_pending or wake
        if lead:
            if linger:
                self._loop.call_later(MAX_LINGER, self._start_handed)
            else:
                self._loop.call_soon(self._start, coroutine, call)
            self._drive(call)
        else:
            if wake:
                self._loop.call_soon_threadsafe(self._start_handed)
            call.ready.acquire()  # released with our outcome, or to make us run the loop
            if not call.done:
                self._drive(call)
        ok, value = call.outcome
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def _helper_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._mutex:
            if self._helpers is None:
                self._helpers = concurrent.futures.ThreadPoolExecutor(
                    thread_name_prefix="runstate-sync-helper"
                )
            return self._helpers

    def _start(self, coroutine: Coroutine[Any, Any, Any], call: _Call) -> None:
        # The loop was idle: one turn first, so I/O that arrived meanwhile (a connection the
        # server closed, say) is seen before the coroutine picks a connection.
        self._loop.create_task(self._settle(coroutine, call, idle=True))

    def _start_handed(self) -> None:
        with self._mutex:
            self._wake_pending = False
            self._lingering = False
            handed = list(self._handed)
            self._handed.clear()
        for coroutine, call in handed:
            self._loop.create_task(self._settle(coroutine, call, idle=False))

    async def _settle(
        self, coroutine: Coroutine[Any, Any, Any], call: _Call, *, idle: bool
    ) -> None:
        try:
            if idle:
                await asyncio.sleep(0)
            call.outcome = (True, await coroutine)
        except (KeyboardInterrupt, SystemExit):
            # Raised in the thread running the loop, inside whichever task ran: that thread
            # must see it, and the call it hit fails.
            call.outcome = (False, StoreUnavailable("interrupted before it finished"))
            self._settled(call)
            raise
        except BaseException as exc:
            call.outcome = (False, exc)
        self._settled(call)

    def _settled(self, call: _Call) -> None:
        with self._mutex:
            call.done = True
            self._in_flight.remove(call)
            if call is self._runner:
                self._loop.stop()
            else:
                call.ready.release()

    def _drive(self, call: _Call) -> None:
        """Run the loop until ``call`` is done, then pass it to a caller still waiting."""
        try:
            while not call.done:
                self._loop.run_forever()
        finally:
            with self._mutex:
                following = next((c for c in self._in_flight if c is not call), None)
                self._runner = following
                if following is not None:
                    following.ready.release()
                else:
                    # The burst is over: the next one expects as many callers.
                    self._expected, self._peak = max(1, self._peak), 0
                    if self._closed and not self._loop.is_closed():
                        self._loop.close()

    def close(self, last: Coroutine[Any, Any, Any]) -> None:
        """Run ``last`` (the store's ``close``), then close the loop once nobody runs it."""
        try:
            self.run(last)
        finally:
            with self._mutex:
                self._closed = True
                helpers, self._helpers = self._helpers, None
                if self._runner is None and not self._loop.is_closed():
                    self._loop.close()
            if helpers is not None:
                helpers.shutdown(wait=False)


async def _opened(url: str, options: dict[str, Any]) -> async_store.RunStateStore:
    return await open_async_store(url, **options)


class BridgedStore(SyncStoreBase):
    """A synchronous ``RunStateStore`` over an async one, through a ``LoopRunner``."""

    def __init__(self, store: async_store.RunStateStore, runner: LoopRunner) -> None:
        self._store = store
        self._runner = runner

    @classmethod
    def open(cls, url: str, options: dict[str, Any]) -> BridgedStore:
        """Open the async store at ``url`` and return it bridged (with its outbox and catalog
        when it has them)."""
        runner = LoopRunner()
        try:
            store = runner.run(_opened(url, options))
        except BaseException:
            runner.close(asyncio.sleep(0))
            raise
        if isinstance(store, async_store.OutboxStore) and isinstance(store, async_store.RunCatalog):
            return BridgedFullStore(store, runner)
        return cls(store, runner)

    @property
    def async_store(self) -> async_store.RunStateStore:
        """The async store this one carries calls to (use it only on its own loop)."""
        return self._store

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} over {self._store!r} {state}>"

    def _close(self) -> None:
        self._runner.close(self._store.close())

    def bootstrap_run_tx(self, input: RunBootstrapInput) -> AppendResult:
        """Atomically store a new run's metadata, its first events and their outbox records."""
        self._check_open()
        return self._runner.run(self._store.bootstrap_run_tx(input))

    def append_and_enqueue_tx(
        self, run_id: str, events: Sequence[RunEventInput], *, expected_seq: int | None = None
    ) -> AppendResult:
        """Atomically append events to an existing run, with one outbox record per new event."""
        self._check_open()
        return self._runner.run(
            self._store.append_and_enqueue_tx(run_id, events, expected_seq=expected_seq)
        )

    def list_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[RunEventPersisted]:
        """Return the run's events with ``seq > after_seq`` in seq order, at most ``limit``."""
        self._check_open()
        return self._runner.run(self._store.list_events(run_id, after_seq=after_seq, limit=limit))

    def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        """Return the run's metadata, or ``None`` if the run does not exist."""
        self._check_open()
        return self._runner.run(self._store.get_run_metadata_by_run_id(run_id))


class BridgedFullStore(BridgedStore):
    """A ``BridgedStore`` whose async store also has the outbox and the catalog."""

    _store: Any  # an async RunStateStore that is an OutboxStore and a RunCatalog too

    def list_runs(
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
        return self._runner.run(
            self._store.list_runs(
                workflow=workflow,
                tenant_id=tenant_id,
                created_after=created_after,
                limit=limit,
                offset=offset,
            )
        )

    def query_runs(
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
        return self._runner.run(  # type: ignore[no-any-return]
            self._store.query_runs(
                filter, order_by=order_by, descending=descending, limit=limit, cursor=cursor
            )
        )

    def count_runs_by_status(self, filter: RunFilter | None = None) -> Mapping[str, int]:
        """Return how many runs match the filter per status (the filter's statuses ignored)."""
        self._check_open()
        return self._runner.run(self._store.count_runs_by_status(filter))

    def list_dead_letters(
        self, *, run_id: str | None = None, limit: int = 100, after_outbox_id: int | None = None
    ) -> list[DeadLetter]:
        """Return dead-lettered records oldest first, with their last error and attempts."""
        self._check_open()
        return self._runner.run(
            self._store.list_dead_letters(
                run_id=run_id, limit=limit, after_outbox_id=after_outbox_id
            )
        )

    def read_feed(self, *, cursor: str | None = None, limit: int = 500) -> FeedPage:
        """Return events of every run committed after ``cursor``, in commit-safe order."""
        self._check_open()
        return self._runner.run(self._store.read_feed(cursor=cursor, limit=limit))  # type: ignore[no-any-return]

    def feed_head(self) -> str:
        """Return a cursor at the current end of the feed, to follow only newer events."""
        self._check_open()
        return self._runner.run(self._store.feed_head())  # type: ignore[no-any-return]

    def claim_outbox_batch(
        self, *, owner: str, limit: int, lease_seconds: float
    ) -> list[OutboxRecord]:
        """Lease up to ``limit`` deliverable records to ``owner``, in per-run seq order."""
        self._check_open()
        return self._runner.run(
            self._store.claim_outbox_batch(owner=owner, limit=limit, lease_seconds=lease_seconds)
        )

    def mark_delivered(self, outbox_ids: Sequence[int], *, owner: str) -> int:
        """Record delivery of records leased by ``owner``; return how many were updated."""
        self._check_open()
        return self._runner.run(self._store.mark_delivered(outbox_ids, owner=owner))  # type: ignore[no-any-return]

    def mark_failed(
        self, outbox_id: int, *, owner: str, error: str, retry_at: datetime | None
    ) -> None:
        """Record a failed delivery: retry at ``retry_at``, or dead-letter when it is ``None``."""
        self._check_open()
        self._runner.run(
            self._store.mark_failed(outbox_id, owner=owner, error=error, retry_at=retry_at)
        )

    def release_outbox(self, outbox_ids: Sequence[int], *, owner: str) -> None:
        """Give back leased records undelivered, without counting an attempt."""
        self._check_open()
        self._runner.run(self._store.release_outbox(outbox_ids, owner=owner))

    def redrive_dead_letters(self, *, run_id: str | None = None) -> int:
        """Make dead-lettered records deliverable again; return how many."""
        self._check_open()
        return self._runner.run(self._store.redrive_dead_letters(run_id=run_id))  # type: ignore[no-any-return]

    def outbox_stats(self) -> OutboxStats:
        """Summarize the outbox: pending, in flight, dead, delivered, oldest pending."""
        self._check_open()
        return self._runner.run(self._store.outbox_stats())  # type: ignore[no-any-return]

    def store_id(self) -> str:
        """Return the store's id: made once with the store, never changed, distinct per store."""
        self._check_open()
        return self._runner.run(self._store.store_id())  # type: ignore[no-any-return]

    def purge_delivered(self, *, older_than: datetime, limit: int = 1000) -> int:
        """Delete up to ``limit`` records delivered before ``older_than``; return how many."""
        self._check_open()
        return self._runner.run(  # type: ignore[no-any-return]
            self._store.purge_delivered(older_than=older_than, limit=limit)
        )

    def wait_for_outbox(self, timeout: float) -> None:
        """Return when new records may be claimable, or after ``timeout`` seconds."""
        self._check_open()
        self._runner.run(self._store.wait_for_outbox(timeout))
