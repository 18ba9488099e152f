# Generated from src/runstate/store.py by tools/async_to_sync.py: do not edit.
"""The synchronous store interfaces, as ``typing.Protocol`` classes: the same methods as
``runstate.store``'s, blocking. Every synchronous store is safe to share between threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from runstate.types import (
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


@runtime_checkable
class RunStateStore(Protocol):
    """Run metadata plus an append-only event log with a transactional outbox.

    The rules every adapter keeps are in docs/design.md, "The store contract".
    """

    def bootstrap_run_tx(self, input: RunBootstrapInput) -> AppendResult:
        """Atomically store a new run's metadata, its first events and their outbox records."""
        ...

    def append_and_enqueue_tx(
        self, run_id: str, events: Sequence[RunEventInput], *, expected_seq: int | None = None
    ) -> AppendResult:
        """Atomically append events to an existing run, with one outbox record per new event."""
        ...

    def list_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[RunEventPersisted]:
        """Return the run's events with ``seq > after_seq`` in seq order, at most ``limit``."""
        ...

    def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        """Return the run's metadata, or ``None`` if the run does not exist."""
        ...

    def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
        ...


@runtime_checkable
class OutboxStore(Protocol):
    """The relay's view of the outbox; every built-in adapter implements it.

    Claiming respects per-run order: a record is claimed only together with every earlier
    undelivered record of its run, so two relays never hold records of one run out of order.
    A record is claimable when it is not delivered, not dead, due (``available_at`` reached)
    and not under an unexpired lease.
    """

    def claim_outbox_batch(
        self, *, owner: str, limit: int, lease_seconds: float
    ) -> list[OutboxRecord]:
        """Lease up to ``limit`` deliverable records to ``owner``, in per-run seq order."""
        ...

    def mark_delivered(self, outbox_ids: Sequence[int], *, owner: str) -> int:
        """Record delivery of records leased by ``owner``; return how many were updated."""
        ...

    def mark_failed(
        self, outbox_id: int, *, owner: str, error: str, retry_at: datetime | None
    ) -> None:
        """Record a failed delivery: retry at ``retry_at``, or dead-letter when it is ``None``."""
        ...

    def release_outbox(self, outbox_ids: Sequence[int], *, owner: str) -> None:
        """Give back leased records undelivered, without counting an attempt."""
        ...

    def redrive_dead_letters(self, *, run_id: str | None = None) -> int:
        """Make dead-lettered records deliverable again; return how many."""
        ...

    def outbox_stats(self) -> OutboxStats:
        """Summarize the outbox: pending, in flight, dead, delivered, oldest pending."""
        ...

    def store_id(self) -> str:
        """Return the store's id: made once with the store, never changed, distinct per store.

        The relay's default CloudEvents ``source`` is ``runstate://<store id>``.
        """
        ...

    def purge_delivered(self, *, older_than: datetime, limit: int = 1000) -> int:
        """Delete up to ``limit`` records delivered before ``older_than``; return how many.

        Retention: delivered records are kept for audit until purged. Purging works in small
        batches so that it never holds up writers; call it until it returns less than ``limit``.
        """
        ...

    def wait_for_outbox(self, timeout: float) -> None:
        """Return when new records may be claimable, or after ``timeout`` seconds."""
        ...

    def list_dead_letters(
        self, *, run_id: str | None = None, limit: int = 100, after_outbox_id: int | None = None
    ) -> list[DeadLetter]:
        """Return dead-lettered records oldest first, with their last error and attempts.

        ``after_outbox_id`` pages on: pass the last ``outbox_id`` of the previous page.
        """
        ...


@runtime_checkable
class RunCatalog(Protocol):
    """Store-wide reads for operators and followers; every built-in adapter implements it."""

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
        ...

    def query_runs(
        self,
        filter: RunFilter | None = None,
        *,
        order_by: RunOrder = "created_at",
        descending: bool = True,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunListPage:
        """Return one page of run summaries matching the filter (keyset paging, ties by run_id).

        The cursor is opaque and bound to the filter and order it came from: passing it with
        another one raises ``InvalidInput`` (field ``cursor``). Runs whose summary changes
        between pages may move across the cursor (keyset paging never repeats a position).
        """
        ...

    def count_runs_by_status(self, filter: RunFilter | None = None) -> Mapping[str, int]:
        """Return how many runs match the filter per status (the filter's statuses ignored).

        Every status is a key (0 when no run has it); ``exclude_statuses`` still applies.
        """
        ...

    def read_feed(self, *, cursor: str | None = None, limit: int = 500) -> FeedPage:
        """Return events of every run committed after ``cursor`` (``None``: from the start).

        The cursor is opaque and commit-safe: an event never becomes visible behind a cursor
        already handed out, so a follower that resumes from the last cursor skips nothing,
        even when writers commit out of position order (PostgreSQL orders the feed by
        transaction id, then position, and shows a transaction only once every older one
        has ended). Pass the returned ``FeedPage.cursor`` to the next call.
        """
        ...

    def feed_head(self) -> str:
        """Return a cursor at the current end of the feed, to follow only newer events."""
        ...
