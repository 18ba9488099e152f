"""The in-memory store: a complete adapter for tests, notebooks and single-process engines.

Every write is one synchronous block with no ``await`` between its checks and its writes,
so concurrent tasks on the event loop can never interleave inside a transaction (ADR-0013).
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .._validation import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    CheckedEvent,
    check_append,
    check_bootstrap,
    check_identifier,
    check_max_payload_bytes,
    check_page,
)
from ..errors import ConcurrencyConflict, InvalidInput, RunAlreadyExists, RunNotFound
from ..types import (
    AppendResult,
    OutboxRecord,
    OutboxStats,
    RunBootstrapInput,
    RunEventInput,
    RunEventPersisted,
    RunMetadata,
    utc_now,
)


@dataclass(kw_only=True, slots=True)
class _OutboxEntry:
    outbox_id: int
    event: RunEventPersisted
    workflow: str
    attempts: int = 0
    dead: bool = False
    available_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = None
    delivered: bool = False


class _MemoryData:
    """The state behind one in-memory store; named stores share one across handles."""

    def __init__(self) -> None:
        self.metadata: dict[str, RunMetadata] = {}
        self.events: dict[str, list[RunEventPersisted]] = {}
        self.event_ids: dict[str, set[str]] = {}
        self.last_position = 0
        # Undelivered outbox entries per run, in seq order; dead entries stay at the head.
        self.outbox: dict[str, deque[_OutboxEntry]] = {}
        self.outbox_index: dict[int, _OutboxEntry] = {}
        self.delivered = 0
        # One event per waiting task, so waiters on different event loops never share one.
        self.waiters: set[asyncio.Event] = set()

    def wake_waiters(self) -> None:
        for waiter in self.waiters:
            waiter.set()


_named: weakref.WeakValueDictionary[str, _MemoryData] = weakref.WeakValueDictionary()


def _shared_data(name: str) -> _MemoryData:
    data = _named.get(name)
    if data is None:
        data = _named[name] = _MemoryData()
    return data


class MemoryStore:
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
        data = _MemoryData() if name is None else _shared_data(name)
        self._data = data
        self._metadata = data.metadata
        self._events = data.events
        self._event_ids = data.event_ids
        self._outbox = data.outbox
        self._outbox_index = data.outbox_index
        self._closed = False

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Mark the store closed; its data is dropped with the object."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput("the store is closed")

    async def bootstrap_run_tx(self, input: RunBootstrapInput) -> AppendResult:
        """Atomically store a new run's metadata, its first events and their outbox records."""
        self._check_open()
        checked_metadata, checked_events = check_bootstrap(input, self._max_payload_bytes)
        metadata = checked_metadata.metadata
        run_id = metadata.run_id
        if run_id in self._metadata:
            raise RunAlreadyExists(
                run_id, same_request=self._is_same_bootstrap(input, self._metadata[run_id])
            )
        # Keep a private copy so later mutation by the caller cannot reach the store.
        stored = _copy_metadata(metadata, checked_metadata.input_json)
        self._metadata[run_id] = stored
        self._events[run_id] = []
        self._event_ids[run_id] = set()
        return self._append(run_id, stored.workflow, checked_events)

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
        metadata = self._metadata.get(run_id)
        if metadata is None:
            raise RunNotFound(run_id)
        last_seq = len(self._events[run_id])
        if expected_seq is not None and expected_seq != last_seq:
            raise ConcurrencyConflict(run_id, expected_seq=expected_seq, actual_seq=last_seq)
        return self._append(run_id, metadata.workflow, checked)

    def _append(self, run_id: str, workflow: str, checked: list[CheckedEvent]) -> AppendResult:
        log = self._events[run_id]
        seen = self._event_ids[run_id]
        appended: list[RunEventPersisted] = []
        deduplicated: list[str] = []
        recorded_at = utc_now()
        outbox = self._outbox.get(run_id)
        for item in checked:
            event = item.event
            if event.event_id in seen:
                deduplicated.append(event.event_id)
                continue
            seen.add(event.event_id)
            self._data.last_position += 1
            persisted = RunEventPersisted(
                run_id=run_id,
                seq=len(log) + 1,
                position=self._data.last_position,
                type=event.type,
                payload=json.loads(item.payload_json),
                event_id=event.event_id,
                schema_version=event.schema_version,
                occurred_at=None
                if event.occurred_at is None
                else event.occurred_at.astimezone(UTC),
                recorded_at=recorded_at,
            )
            log.append(persisted)
            appended.append(persisted)
            if outbox is None:
                outbox = self._outbox[run_id] = deque()
            entry = _OutboxEntry(outbox_id=persisted.position, event=persisted, workflow=workflow)
            outbox.append(entry)
            self._outbox_index[entry.outbox_id] = entry
        if appended:
            self._data.wake_waiters()
        return AppendResult(
            run_id=run_id,
            appended=tuple(appended),
            deduplicated=tuple(deduplicated),
            last_seq=len(log),
        )

    def _is_same_bootstrap(self, input: RunBootstrapInput, stored: RunMetadata) -> bool:
        given = input.metadata
        first_ids = [event.event_id for event in input.first_events]
        stored_ids = [event.event_id for event in self._events[stored.run_id][: len(first_ids)]]
        return (
            given.workflow == stored.workflow
            and given.workflow_version == stored.workflow_version
            and given.tenant_id == stored.tenant_id
            and given.parent_run_id == stored.parent_run_id
            and given.input == stored.input
            and dict(given.labels) == dict(stored.labels)
            and first_ids == stored_ids
        )

    async def list_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[RunEventPersisted]:
        """Return the run's events with ``seq > after_seq`` in seq order, at most ``limit``."""
        self._check_open()
        check_identifier(run_id, "run_id")
        check_page(after_seq, limit)
        log = self._events.get(run_id, [])
        end = len(log) if limit is None else after_seq + limit
        return log[after_seq:end]

    async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        """Return the run's metadata, or ``None`` if the run does not exist."""
        self._check_open()
        check_identifier(run_id, "run_id")
        return self._metadata.get(run_id)

    # -- outbox -------------------------------------------------------------------------

    async def claim_outbox_batch(
        self, *, owner: str, limit: int, lease_seconds: float
    ) -> list[OutboxRecord]:
        """Lease up to ``limit`` deliverable records to ``owner``, in per-run seq order."""
        self._check_open()
        check_identifier(owner, "owner")
        now = utc_now()
        expires = now + timedelta(seconds=lease_seconds)
        claimed: list[OutboxRecord] = []
        # Oldest head first, so a busy run cannot starve the others.
        heads = sorted(
            (queue[0].outbox_id, run_id) for run_id, queue in self._outbox.items() if queue
        )
        for _, run_id in heads:
            if len(claimed) >= limit:
                break
            for entry in self._outbox[run_id]:
                if entry.delivered:
                    continue
                if len(claimed) >= limit or not _claimable(entry, now):
                    break
                entry.lease_owner = owner
                entry.lease_expires_at = expires
                claimed.append(_record(entry))
        return claimed

    async def mark_delivered(self, outbox_ids: Sequence[int], *, owner: str) -> int:
        """Record delivery of records leased by ``owner``; return how many were updated."""
        self._check_open()
        done = 0
        touched: set[str] = set()
        for outbox_id in outbox_ids:
            entry = self._outbox_index.get(outbox_id)
            if entry is None or entry.lease_owner != owner or entry.dead:
                continue
            entry.delivered = True
            del self._outbox_index[outbox_id]
            touched.add(entry.event.run_id)
            done += 1
        for run_id in touched:
            queue = self._outbox[run_id]
            while queue and queue[0].delivered:
                queue.popleft()
            if not queue:
                del self._outbox[run_id]
        self._data.delivered += done
        return done

    async def mark_failed(
        self, outbox_id: int, *, owner: str, error: str, retry_at: datetime | None
    ) -> None:
        """Record a failed delivery: retry at ``retry_at``, or dead-letter when it is ``None``."""
        self._check_open()
        entry = self._outbox_index.get(outbox_id)
        if entry is None or entry.lease_owner != owner:
            return
        entry.attempts += 1
        entry.last_error = error
        entry.lease_owner = None
        entry.lease_expires_at = None
        if retry_at is None:
            entry.dead = True
        else:
            entry.available_at = retry_at

    async def release_outbox(self, outbox_ids: Sequence[int], *, owner: str) -> None:
        """Give back leased records undelivered, without counting an attempt."""
        self._check_open()
        for outbox_id in outbox_ids:
            entry = self._outbox_index.get(outbox_id)
            if entry is not None and entry.lease_owner == owner:
                entry.lease_owner = None
                entry.lease_expires_at = None
        self._data.wake_waiters()

    async def redrive_dead_letters(self, *, run_id: str | None = None) -> int:
        """Make dead-lettered records deliverable again; return how many."""
        self._check_open()
        count = 0
        for queue_run_id, queue in self._outbox.items():
            if run_id is not None and queue_run_id != run_id:
                continue
            for entry in queue:
                if entry.dead and not entry.delivered:
                    entry.dead = False
                    entry.attempts = 0
                    entry.available_at = None
                    count += 1
        if count:
            self._data.wake_waiters()
        return count

    async def outbox_stats(self) -> OutboxStats:
        """Summarize the outbox: pending, in flight, dead, delivered, oldest pending."""
        self._check_open()
        now = utc_now()
        pending = in_flight = dead = 0
        oldest: datetime | None = None
        for queue in self._outbox.values():
            for entry in queue:
                if entry.delivered:
                    continue
                if entry.dead:
                    dead += 1
                    continue
                if entry.lease_owner is not None and _lease_live(entry, now):
                    in_flight += 1
                else:
                    pending += 1
                recorded = entry.event.recorded_at
                if oldest is None or recorded < oldest:
                    oldest = recorded
        return OutboxStats(
            pending=pending,
            in_flight=in_flight,
            dead=dead,
            delivered=self._data.delivered,
            oldest_pending_at=oldest,
        )

    async def wait_for_outbox(self, timeout: float) -> None:
        """Return when new records may be claimable, or after ``timeout`` seconds."""
        waiter = asyncio.Event()
        self._data.waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            return
        finally:
            self._data.waiters.discard(waiter)


def _lease_live(entry: _OutboxEntry, now: datetime) -> bool:
    return entry.lease_expires_at is not None and entry.lease_expires_at > now


def _claimable(entry: _OutboxEntry, now: datetime) -> bool:
    if entry.dead:
        return False
    if entry.lease_owner is not None and _lease_live(entry, now):
        return False
    return entry.available_at is None or entry.available_at <= now


def _record(entry: _OutboxEntry) -> OutboxRecord:
    return OutboxRecord(
        outbox_id=entry.outbox_id,
        event=entry.event,
        workflow=entry.workflow,
        attempts=entry.attempts,
        lease_owner=entry.lease_owner,
        lease_expires_at=entry.lease_expires_at,
    )


def _copy_metadata(metadata: RunMetadata, input_json: str) -> RunMetadata:
    return RunMetadata(
        run_id=metadata.run_id,
        workflow=metadata.workflow,
        workflow_version=metadata.workflow_version,
        tenant_id=metadata.tenant_id,
        parent_run_id=metadata.parent_run_id,
        input=json.loads(input_json),
        labels=dict(metadata.labels),
        created_at=metadata.created_at.astimezone(UTC),
        schema_version=metadata.schema_version,
    )
