"""The in-memory adapter's state: runs, delivery records, named stores, and the copies
it hands out (see ``runstate.adapters.memory``)."""

from __future__ import annotations

import dataclasses
import heapq
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .._validation import CheckedMetadata
from ..types import (
    JSON,
    DeadLetter,
    RunBootstrapInput,
    RunEventPersisted,
    RunMetadata,
    RunSummary,
    new_persisted_event,
    new_run_metadata,
    new_run_summary,
)
from ._base import OutboxWaiters, is_same_bootstrap, unique_first_event_ids
from ._catalog import RunQuery, SummaryState, count_template


class RunData:
    """One run: its metadata, its log, the event ids it holds, its undelivered records, and
    its summary (status, attempt, times), replaced in the same locked block as each append."""

    __slots__ = ("event_ids", "events", "metadata", "pending", "summary")

    def __init__(self, metadata: RunMetadata) -> None:
        self.metadata = metadata
        self.summary = SummaryState()
        self.events: list[RunEventPersisted] = []
        self.event_ids: set[str] = set()
        # Undelivered outbox records in seq order; dead ones stay and block the run.
        self.pending: deque[RunEventPersisted] = deque()


class Delivery:
    """Delivery state of one outbox record, created when the record is first claimed."""

    __slots__ = (
        "attempts",
        "available_at",
        "dead",
        "dead_at",
        "last_error",
        "lease_expires_at",
        "lease_owner",
    )

    def __init__(self) -> None:
        self.attempts = 0
        self.dead = False
        self.dead_at: datetime | None = None
        self.available_at: datetime | None = None
        self.lease_owner: str | None = None
        self.lease_expires_at: datetime | None = None
        self.last_error: str | None = None

    def leased(self, now: datetime) -> bool:
        """Whether an unexpired lease holds the record."""
        return (
            self.lease_owner is not None
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )

    def claimable(self, now: datetime) -> bool:
        """Whether a claim may lease the record now."""
        if self.dead or self.leased(now):
            return False
        return self.available_at is None or self.available_at <= now


class MemoryData:
    """The state behind one in-memory store; named stores share one across handles."""

    def __init__(self) -> None:
        self.runs: dict[str, RunData] = {}
        # One id per store's data: a named store's handles share it, like a database's.
        self.store_id = str(uuid.uuid4())
        self.last_position = 0
        # Outbox: every undelivered record by id (= position), and delivery state by id.
        self.undelivered: dict[int, RunEventPersisted] = {}
        self.deliveries: dict[int, Delivery] = {}
        # The W3C (traceparent, tracestate) current when each traced event was written.
        self.traces: dict[int, tuple[str, str | None]] = {}
        # Delivered records kept for retention: (delivered at, outbox id), oldest first.
        self.delivered_log: deque[tuple[datetime, int]] = deque()
        self.waiters = OutboxWaiters()
        # Held by every read and write of every store on this data, async or synchronous:
        # each is one short block without I/O, so the lock is never held long.
        self.lock = threading.Lock()

    def wake_waiters(self) -> None:
        """Wake every ``wait_for_outbox`` on this data, on any loop or thread."""
        self.waiters.wake()


_named: weakref.WeakValueDictionary[str, MemoryData] = weakref.WeakValueDictionary()


_named_lock = threading.Lock()


def shared_data(name: str) -> MemoryData:
    """The data of the named store ``name``, created on first use."""
    with _named_lock:
        data = _named.get(name)
        if data is None:
            data = _named[name] = MemoryData()
        return data


def copy_json(value: JSON) -> JSON:
    """A deep copy of validated JSON: only dicts and lists are mutable in it.

    A flat dict or list (the common payload) is copied by one C call.
    """
    if type(value) is dict:
        for item in value.values():
            if type(item) is dict or type(item) is list:
                return {key: copy_json(item) for key, item in value.items()}
        return value.copy()
    if type(value) is list:
        for item in value:
            if type(item) is dict or type(item) is list:
                return [copy_json(item) for item in value]
        return value.copy()
    return value


def copy_event(event: RunEventPersisted) -> RunEventPersisted:
    """The event with a payload of its own, to hand out."""
    payload = event.payload
    copied: RunEventPersisted = new_persisted_event(
        event.run_id,
        event.seq,
        event.position,
        event.type,
        copy_json(payload) if payload else {},  # type: ignore[arg-type]
        event.event_id,
        event.schema_version,
        event.occurred_at,
        event.recorded_at,
    )
    return copied


def copy_stored_metadata(metadata: RunMetadata) -> RunMetadata:
    """The metadata with an input and labels of its own, to hand out."""
    copied: RunMetadata = new_run_metadata(
        metadata.run_id,
        metadata.workflow,
        metadata.workflow_version,
        metadata.tenant_id,
        metadata.parent_run_id,
        copy_json(metadata.input),
        dict(metadata.labels),
        metadata.created_at,
        metadata.schema_version,
    )
    return copied


# -- run queries (each called under the data's lock) ---------------------------------------


def summary_of(run: RunData) -> RunSummary:
    """The run's summary, with metadata of its own, to hand out."""
    state = run.summary
    summary: RunSummary = new_run_summary(
        copy_stored_metadata(run.metadata),
        state.last_seq,
        state.updated_at,
        state.status,
        state.attempt,
        state.started_at,
        state.finished_at,
    )
    return summary


def _sort_key(order_by: str) -> Callable[[RunData], tuple[Any, str]]:
    if order_by == "created_at":
        return lambda run: (run.metadata.created_at, run.metadata.run_id)
    if order_by == "updated_at":
        return lambda run: (run.summary.updated_at, run.metadata.run_id)
    if order_by == "workflow":
        return lambda run: (run.metadata.workflow, run.metadata.run_id)
    return lambda run: (run.summary.status, run.metadata.run_id)


def select_runs(runs: dict[str, RunData], query: RunQuery) -> list[RunSummary]:
    """Up to ``limit + 1`` summaries matching ``query`` after its cursor, in its order."""
    key = _sort_key(query.order_by)
    after = query.after
    descending = query.descending
    selected = [
        run
        for run in runs.values()
        if query.matches(run.metadata, run.summary.status)
        and (after is None or (key(run) < after if descending else key(run) > after))
    ]
    pick = heapq.nlargest if descending else heapq.nsmallest
    return [summary_of(run) for run in pick(query.limit + 1, selected, key=key)]


def count_statuses(runs: dict[str, RunData], query: RunQuery) -> dict[str, int]:
    """How many runs pass ``query`` per status; its ``statuses`` are ignored."""
    query = dataclasses.replace(query, statuses=None)
    counts = count_template()
    for run in runs.values():
        status = run.summary.status
        if query.matches(run.metadata, status):
            counts[status] += 1
    return counts


def dead_letters(data: MemoryData, run_id: str | None, limit: int, after: int) -> list[DeadLetter]:
    """Dead-lettered records with ids over ``after``, oldest first, at most ``limit``."""
    dead = sorted(
        outbox_id
        for outbox_id, delivery in data.deliveries.items()
        if delivery.dead
        and outbox_id > after
        and (run_id is None or data.undelivered[outbox_id].run_id == run_id)
    )
    letters: list[DeadLetter] = []
    for outbox_id in dead[:limit]:
        event = data.undelivered[outbox_id]
        delivery = data.deliveries[outbox_id]
        letters.append(
            DeadLetter(
                outbox_id=outbox_id,
                event=copy_event(event),
                workflow=data.runs[event.run_id].metadata.workflow,
                attempts=delivery.attempts,
                last_error=delivery.last_error,
                dead_at=delivery.dead_at,
            )
        )
    return letters


def same_bootstrap_as_stored(input: RunBootstrapInput, existing: RunData) -> bool:
    """Tell whether a refused bootstrap asked for exactly the run already stored."""
    wanted = len(unique_first_event_ids(input))
    stored_ids = [event.event_id for event in existing.events[:wanted]]
    return is_same_bootstrap(input, existing.metadata, stored_ids)


def stored_metadata_copy(checked: CheckedMetadata) -> RunMetadata:
    """The metadata to store for a checked bootstrap, sharing nothing with the caller's."""
    # The validation's private copies, so later mutation by the caller cannot reach the store.
    metadata = checked.metadata
    return new_run_metadata(
        metadata.run_id,
        metadata.workflow,
        metadata.workflow_version,
        metadata.tenant_id,
        metadata.parent_run_id,
        checked.input,
        checked.labels,
        checked.created_at,
        metadata.schema_version,
    )
