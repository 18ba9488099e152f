"""The async store protocols over a synchronous store, each call on a thread of its own.

``ThreadedStore(sync_store)`` lets the contract suite (which is async) check a store of
``runstate.sync``: every call runs the synchronous method on a thread of a shared pool, so
the suite's concurrent calls (``asyncio.gather`` of 50 bootstraps of one run id, say) are
that many threads calling one synchronous store at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

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

#: Threads the calls of every ``ThreadedStore`` share: more than any suite runs at once.
POOL_THREADS = 96
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def call_in_thread_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The thread pool ``ThreadedStore`` calls run on (made on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                POOL_THREADS, thread_name_prefix="runstate-threaded-store"
            )
        return _pool


async def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``function(*args, **kwargs)`` on a pool thread and await its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        call_in_thread_pool(), functools.partial(function, *args, **kwargs)
    )


class ThreadedStore:
    """An async ``RunStateStore``, ``OutboxStore`` and ``RunCatalog`` over a synchronous store.

    ``sync`` is the synchronous store; it must have the outbox and catalog methods for those
    interfaces to work.
    """

    def __init__(self, sync: Any) -> None:
        self.sync = sync

    def __repr__(self) -> str:
        return f"<ThreadedStore over {self.sync!r}>"

    async def bootstrap_run_tx(self, input: RunBootstrapInput) -> AppendResult:
        """Call the synchronous ``bootstrap_run_tx`` on a thread."""
        result: AppendResult = await in_thread(self.sync.bootstrap_run_tx, input)
        return result

    async def append_and_enqueue_tx(
        self, run_id: str, events: Sequence[RunEventInput], *, expected_seq: int | None = None
    ) -> AppendResult:
        """Call the synchronous ``append_and_enqueue_tx`` on a thread."""
        result: AppendResult = await in_thread(
            self.sync.append_and_enqueue_tx, run_id, events, expected_seq=expected_seq
        )
        return result

    async def list_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[RunEventPersisted]:
        """Call the synchronous ``list_events`` on a thread."""
        events: list[RunEventPersisted] = await in_thread(
            self.sync.list_events, run_id, after_seq=after_seq, limit=limit
        )
        return events

    async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        """Call the synchronous ``get_run_metadata_by_run_id`` on a thread."""
        metadata: RunMetadata | None = await in_thread(self.sync.get_run_metadata_by_run_id, run_id)
        return metadata

    async def close(self) -> None:
        """Close the synchronous store (on a thread)."""
        await in_thread(self.sync.close)

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        tenant_id: str | None = None,
        created_after: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunSummary]:
        """Call the synchronous ``list_runs`` on a thread."""
        runs: list[RunSummary] = await in_thread(
            self.sync.list_runs,
            workflow=workflow,
            tenant_id=tenant_id,
            created_after=created_after,
            limit=limit,
            offset=offset,
        )
        return runs

    async def query_runs(
        self,
        filter: RunFilter | None = None,
        *,
        order_by: RunOrder = "created_at",
        descending: bool = True,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunListPage:
        """Call the synchronous ``query_runs`` on a thread."""
        page: RunListPage = await in_thread(
            self.sync.query_runs,
            filter,
            order_by=order_by,
            descending=descending,
            limit=limit,
            cursor=cursor,
        )
        return page

    async def count_runs_by_status(self, filter: RunFilter | None = None) -> Mapping[str, int]:
        """Call the synchronous ``count_runs_by_status`` on a thread."""
        counts: Mapping[str, int] = await in_thread(self.sync.count_runs_by_status, filter)
        return counts

    async def list_dead_letters(
        self, *, run_id: str | None = None, limit: int = 100, after_outbox_id: int | None = None
    ) -> list[DeadLetter]:
        """Call the synchronous ``list_dead_letters`` on a thread."""
        letters: list[DeadLetter] = await in_thread(
            self.sync.list_dead_letters,
            run_id=run_id,
            limit=limit,
            after_outbox_id=after_outbox_id,
        )
        return letters

    async def read_feed(self, *, cursor: str | None = None, limit: int = 500) -> FeedPage:
        """Call the synchronous ``read_feed`` on a thread."""
        page: FeedPage = await in_thread(self.sync.read_feed, cursor=cursor, limit=limit)
        return page

    async def feed_head(self) -> str:
        """Call the synchronous ``feed_head`` on a thread."""
        head: str = await in_thread(self.sync.feed_head)
        return head

    async def claim_outbox_batch(
        self, *, owner: str, limit: int, lease_seconds: float
    ) -> list[OutboxRecord]:
        """Call the synchronous ``claim_outbox_batch`` on a thread."""
        records: list[OutboxRecord] = await in_thread(
            self.sync.claim_outbox_batch, owner=owner, limit=limit, lease_seconds=lease_seconds
        )
        return records

    async def mark_delivered(self, outbox_ids: Sequence[int], *, owner: str) -> int:
        """Call the synchronous ``mark_delivered`` on a thread."""
        count: int = await in_thread(self.sync.mark_delivered, outbox_ids, owner=owner)
        return count

    async def mark_failed(
        self, outbox_id: int, *, owner: str, error: str, retry_at: datetime | None
    ) -> None:
        """Call the synchronous ``mark_failed`` on a thread."""
        await in_thread(
            self.sync.mark_failed, outbox_id, owner=owner, error=error, retry_at=retry_at
        )

    async def release_outbox(self, outbox_ids: Sequence[int], *, owner: str) -> None:
        """Call the synchronous ``release_outbox`` on a thread."""
        await in_thread(self.sync.release_outbox, outbox_ids, owner=owner)

    async def redrive_dead_letters(self, *, run_id: str | None = None) -> int:
        """Call the synchronous ``redrive_dead_letters`` on a thread."""
        count: int = await in_thread(self.sync.redrive_dead_letters, run_id=run_id)
        return count

    async def store_id(self) -> str:
        """Call the synchronous ``store_id`` on a thread."""
        store_id: str = await in_thread(self.sync.store_id)
        return store_id

    async def outbox_stats(self) -> OutboxStats:
        """Call the synchronous ``outbox_stats`` on a thread."""
        stats: OutboxStats = await in_thread(self.sync.outbox_stats)
        return stats

    async def purge_delivered(self, *, older_than: datetime, limit: int = 1000) -> int:
        """Call the synchronous ``purge_delivered`` on a thread."""
        count: int = await in_thread(self.sync.purge_delivered, older_than=older_than, limit=limit)
        return count

    async def wait_for_outbox(self, timeout: float) -> None:
        """Call the synchronous ``wait_for_outbox`` on a thread."""
        await in_thread(self.sync.wait_for_outbox, timeout)
