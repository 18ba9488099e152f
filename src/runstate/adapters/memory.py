"""The in-memory store: a complete adapter for tests, notebooks and single-process engines.

Every write is one synchronous block with no ``await`` between its checks and its writes,
under the data's lock, so neither concurrent tasks on an event loop nor threads (the
synchronous store of ``runstate.sync`` shares the data of a ``memory://name``) can interleave
inside a transaction; each computes everything that can fail before its first change, so a
failed write leaves no trace.
Payloads, inputs and labels are copied on the way in and on the way out: nothing a caller
changes in what it passed or got back can change what the store returns next, as on the SQL
adapters, which decode fresh objects on every read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from .._open import refuse_unknown_options
from .._url import StoreUrl
from .._validation import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    CheckedEvent,
    check_append,
    check_bootstrap,
    check_claim,
    check_failure,
    check_identifier,
    check_max_payload_bytes,
    check_outbox_ids,
    check_page,
    check_purge,
    check_run_filters,
    check_wait_timeout,
    parse_position_cursor,
)
from ..errors import ConcurrencyConflict, RunAlreadyExists, RunNotFound
from ..tracing import current_trace_context, traced_write
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
    new_append_result,
    new_outbox_record,
    new_persisted_event,
    utc_now,
)
from ._base import StoreBase
from ._catalog import (
    check_dead_letter_page,
    check_run_filter,
    check_run_query,
    fold_summary,
    page_of,
)
from ._memory_data import (
    Delivery,
    MemoryData,
    RunData,
    copy_event,
    copy_stored_metadata,
    count_statuses,
    dead_letters,
    same_bootstrap_as_stored,
    select_runs,
    shared_data,
    stored_metadata_copy,
    summary_of,
)


async def open_memory_store(url: StoreUrl, options: dict[str, Any]) -> MemoryStore:
    """Open ``memory://`` (private) or ``memory://name`` (shared in-process); for ``open_store``.

    ``max_payload_bytes`` may also be given in the URL's query; keywords win.
    """
    merged: dict[str, Any] = dict(url.query)
    merged.update(options)
    refuse_unknown_options(url, merged, {"max_payload_bytes"})
    limit = merged.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES)
    if isinstance(limit, str) and limit.isascii() and limit.isdigit() and len(limit) < 19:
        limit = int(limit)
    name = url.raw.split("://", 1)[1].split("?", 1)[0].split("#", 1)[0].strip("/")
    return MemoryStore(name=name or None, max_payload_bytes=limit)


class MemoryStore(StoreBase):
    """A ``RunStateStore`` and ``OutboxStore`` kept in process memory.

    ``MemoryStore()`` (``memory://``) is private to its object; ``MemoryStore(name="x")``
    (``memory://x``) shares its data with every open store of the same name in this process,
    for as long as one of them is referenced.
    """

    def __init__(
        self, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, name: str | None = None
    ) -> None:
        self._max_payload_bytes = check_max_payload_bytes(max_payload_bytes)
        self.name = name
        self._data = MemoryData() if name is None else shared_data(name)
        self._runs = self._data.runs
        self._lock = self._data.lock
        #: The database attributes of this store's spans (see ``runstate.tracing``).
        self.trace_attributes = {"db.system.name": "memory"}
        if name:
            self.trace_attributes["db.namespace"] = name

    async def _close(self) -> None:
        """Nothing to release: the data goes when no handle references it."""

    @traced_write("bootstrap_run_tx")
    async def bootstrap_run_tx(self, input: RunBootstrapInput) -> AppendResult:
        """Atomically store a new run's metadata, its first events and their outbox records."""
        self._check_open()
        checked_metadata, checked_events = check_bootstrap(input, self._max_payload_bytes)
        with self._lock:
            run_id = checked_metadata.metadata.run_id
            existing = self._runs.get(run_id)
            if existing is not None:
                raise RunAlreadyExists(
                    run_id, same_request=same_bootstrap_as_stored(input, existing)
                )
            return self._append(
                run_id, RunData(stored_metadata_copy(checked_metadata)), checked_events
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
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFound(run_id)
            if expected_seq is not None and expected_seq != len(run.events):
                raise ConcurrencyConflict(
                    run_id, expected_seq=expected_seq, actual_seq=len(run.events)
                )
            return self._append(run_id, run, checked)

    def _append(self, run_id: str, run: RunData, checked: list[CheckedEvent]) -> AppendResult:
        """Append to ``run`` (a new run when it is not stored yet): first compute everything,
        then change the store in steps that cannot fail."""
        data = self._data
        seen = run.event_ids
        taken: set[str] = set()
        stored: list[RunEventPersisted] = []
        deduplicated: list[str] = []
        recorded_at = utc_now()
        seq = len(run.events)
        position = data.last_position
        for item in checked:
            event = item.event
            event_id = event.event_id
            if event_id in seen or event_id in taken:
                deduplicated.append(event_id)
                continue
            taken.add(event_id)
            seq += 1
            position += 1
            stored.append(
                new_persisted_event(
                    run_id,
                    seq,
                    position,
                    event.type,
                    item.payload,
                    event_id,
                    event.schema_version,
                    item.occurred_at,
                    recorded_at,
                )
            )
        result = new_append_result(
            run_id, tuple(copy_event(e) for e in stored), tuple(deduplicated), seq
        )
        summary = fold_summary(
            run.summary, [(e.seq, e.type, e.occurred_at, e.recorded_at) for e in stored]
        )
        # Nothing below can fail: the write happens whole.
        if run_id not in self._runs:
            self._runs[run_id] = run
        run.summary = summary
        data.last_position = position
        run.events.extend(stored)
        seen.update(taken)
        run.pending.extend(stored)
        for persisted in stored:
            data.undelivered[persisted.position] = persisted
        trace = current_trace_context()
        if trace is not None:
            # Stored with the events, as the SQL stores do: the relay sends it on.
            for persisted in stored:
                data.traces[persisted.position] = trace
        if stored:
            data.wake_waiters()
        return result

    async def list_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[RunEventPersisted]:
        """Return the run's events with ``seq > after_seq`` in seq order, at most ``limit``."""
        self._check_open()
        check_identifier(run_id, "run_id")
        check_page(after_seq, limit)
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return []
            end = len(run.events) if limit is None else after_seq + limit
            return [copy_event(event) for event in run.events[after_seq:end]]

    async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        """Return the run's metadata, or ``None`` if the run does not exist."""
        self._check_open()
        check_identifier(run_id, "run_id")
        with self._lock:
            run = self._runs.get(run_id)
            return None if run is None else copy_stored_metadata(run.metadata)

    # -- catalog ------------------------------------------------------------------------

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
        with self._lock:
            selected = [
                run
                for run in self._runs.values()
                if (workflow is None or run.metadata.workflow == workflow)
                and (tenant_id is None or run.metadata.tenant_id == tenant_id)
                and (created_after is None or run.metadata.created_at > created_after)
            ]
            selected.sort(
                key=lambda run: (run.metadata.created_at, run.metadata.run_id), reverse=True
            )
            return [summary_of(run) for run in selected[offset : offset + limit]]

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
        with self._lock:
            rows = select_runs(self._runs, query)
        runs, next_cursor = page_of(query, rows)
        return RunListPage(runs=runs, next_cursor=next_cursor)

    async def count_runs_by_status(self, filter: RunFilter | None = None) -> Mapping[str, int]:
        """Return how many runs match the filter per status (the filter's statuses ignored)."""
        self._check_open()
        query = check_run_filter(filter)
        with self._lock:
            return count_statuses(self._runs, query)

    async def read_feed(self, *, cursor: str | None = None, limit: int = 500) -> FeedPage:
        """Return events of every run after ``cursor``, in position order."""
        self._check_open()
        after = parse_position_cursor(cursor, limit)
        with self._lock:
            # Writes are synchronous blocks, so positions become visible strictly in order.
            found = [
                event
                for run in self._runs.values()
                for event in run.events
                if event.position > after
            ]
            found.sort(key=lambda event: event.position)
            page = tuple(copy_event(event) for event in found[:limit])
            return FeedPage(events=page, cursor=str(page[-1].position) if page else str(after))

    async def feed_head(self) -> str:
        """Return a cursor at the current end of the feed, to follow only newer events."""
        self._check_open()
        with self._lock:
            return str(self._data.last_position)

    # -- outbox -------------------------------------------------------------------------

    async def claim_outbox_batch(
        self, *, owner: str, limit: int, lease_seconds: float
    ) -> list[OutboxRecord]:
        """Lease up to ``limit`` deliverable records to ``owner``, in per-run seq order."""
        self._check_open()
        check_claim(owner, limit, lease_seconds)
        with self._lock:
            data = self._data
            now = utc_now()
            expires = now + timedelta(seconds=lease_seconds)
            claimed: list[OutboxRecord] = []
            # Oldest head first, so a busy run cannot starve the others.
            heads = sorted(
                (run.pending[0].position, run_id)
                for run_id, run in self._runs.items()
                if run.pending
            )
            for _, run_id in heads:
                run = self._runs[run_id]
                for event in run.pending:
                    if len(claimed) >= limit:
                        return claimed
                    if event.position not in data.undelivered:
                        continue
                    delivery = data.deliveries.get(event.position)
                    if delivery is None:
                        delivery = data.deliveries[event.position] = Delivery()
                    elif not delivery.claimable(now):
                        break
                    delivery.lease_owner = owner
                    delivery.lease_expires_at = expires
                    traceparent, tracestate = data.traces.get(event.position, (None, None))
                    claimed.append(
                        new_outbox_record(
                            event.position,
                            copy_event(event),
                            run.metadata.workflow,
                            delivery.attempts,
                            owner,
                            expires,
                            traceparent,
                            tracestate,
                        )
                    )
            return claimed

    def _owned(self, outbox_id: int, owner: str) -> Delivery | None:
        delivery = self._data.deliveries.get(outbox_id)
        if delivery is None or delivery.lease_owner != owner or delivery.dead:
            return None
        return delivery

    async def mark_delivered(self, outbox_ids: Sequence[int], *, owner: str) -> int:
        """Record delivery of records leased by ``owner``; return how many were updated."""
        self._check_open()
        ids = check_outbox_ids(outbox_ids, owner)
        with self._lock:
            data = self._data
            done = 0
            touched: set[str] = set()
            delivered_at = utc_now()
            for outbox_id in ids:
                if self._owned(outbox_id, owner) is None:
                    continue
                del data.deliveries[outbox_id]
                touched.add(data.undelivered.pop(outbox_id).run_id)
                data.delivered_log.append((delivered_at, outbox_id))
                done += 1
            for run_id in touched:
                pending = self._runs[run_id].pending
                while pending and pending[0].position not in data.undelivered:
                    pending.popleft()
            return done

    async def mark_failed(
        self, outbox_id: int, *, owner: str, error: str, retry_at: datetime | None
    ) -> None:
        """Record a failed delivery: retry at ``retry_at``, or dead-letter when it is ``None``."""
        self._check_open()
        text = check_failure(outbox_id, owner, error, retry_at)
        with self._lock:
            delivery = self._owned(outbox_id, owner)
            if delivery is None:
                return
            delivery.attempts += 1
            delivery.last_error = text
            delivery.lease_owner = None
            delivery.lease_expires_at = None
            if retry_at is None:
                delivery.dead = True
                delivery.dead_at = utc_now()
            else:
                delivery.available_at = retry_at

    async def release_outbox(self, outbox_ids: Sequence[int], *, owner: str) -> None:
        """Give back leased records undelivered, without counting an attempt."""
        self._check_open()
        with self._lock:
            for outbox_id in check_outbox_ids(outbox_ids, owner):
                delivery = self._owned(outbox_id, owner)
                if delivery is not None:
                    delivery.lease_owner = None
                    delivery.lease_expires_at = None
            self._data.wake_waiters()

    async def redrive_dead_letters(self, *, run_id: str | None = None) -> int:
        """Make dead-lettered records deliverable again; return how many."""
        self._check_open()
        check_identifier(run_id, "run_id", optional=True)
        with self._lock:
            data = self._data
            count = 0
            for outbox_id, delivery in data.deliveries.items():
                if not delivery.dead:
                    continue
                if run_id is not None and data.undelivered[outbox_id].run_id != run_id:
                    continue
                delivery.dead = False
                delivery.dead_at = None
                delivery.attempts = 0
                delivery.available_at = None
                count += 1
            if count:
                data.wake_waiters()
            return count

    async def store_id(self) -> str:
        """Return this store's id, made with its data (handles of one name share it)."""
        self._check_open()
        return self._data.store_id

    async def outbox_stats(self) -> OutboxStats:
        """Summarize the outbox: pending, in flight, dead, delivered, oldest pending."""
        self._check_open()
        with self._lock:
            data = self._data
            now = utc_now()
            in_flight = sum(1 for d in data.deliveries.values() if not d.dead and d.leased(now))
            dead = sum(1 for d in data.deliveries.values() if d.dead)
            oldest: datetime | None = None
            for run in self._runs.values():
                for event in run.pending:
                    delivery = data.deliveries.get(event.position)
                    if event.position in data.undelivered and (
                        delivery is None or not delivery.dead
                    ):
                        if oldest is None or event.recorded_at < oldest:
                            oldest = event.recorded_at
                        break
            return OutboxStats(
                pending=len(data.undelivered) - in_flight - dead,
                in_flight=in_flight,
                dead=dead,
                delivered=len(data.delivered_log),
                oldest_pending_at=oldest,
            )

    async def purge_delivered(self, *, older_than: datetime, limit: int = 1000) -> int:
        """Delete up to ``limit`` records delivered before ``older_than``; return how many."""
        self._check_open()
        check_purge(older_than, limit)
        with self._lock:
            log = self._data.delivered_log
            purged = 0
            while log and purged < limit and log[0][0] < older_than:
                log.popleft()
                purged += 1
            return purged

    async def wait_for_outbox(self, timeout: float) -> None:
        """Return when new records may be claimable, or after ``timeout`` seconds."""
        self._check_open()
        timeout = check_wait_timeout(timeout)
        with self._data.waiters.async_waiter() as waiter:
            await waiter.wait(timeout)

    async def list_dead_letters(
        self, *, run_id: str | None = None, limit: int = 100, after_outbox_id: int | None = None
    ) -> list[DeadLetter]:
        """Return dead-lettered records oldest first, with their last error and attempts."""
        self._check_open()
        check_dead_letter_page(run_id, limit, after_outbox_id)
        with self._lock:
            return dead_letters(self._data, run_id, limit, after_outbox_id or 0)
