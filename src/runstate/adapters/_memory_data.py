"""The in-memory adapter's state: runs, delivery records, named stores, and the copies
it hands out (see ``runstate.adapters.memory``)."""

from __future__ import annotations

import threading
import weakref
from collections import deque
from datetime import datetime

from ..types import JSON, RunEventPersisted, RunMetadata, new_persisted_event, new_run_metadata
from ._base import OutboxWaiters


class RunData:
    """One run: its metadata, its log, the event ids it holds, its undelivered records."""

    __slots__ = ("event_ids", "events", "metadata", "pending")

    def __init__(self, metadata: RunMetadata) -> None:
        self.metadata = metadata
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
        "last_error",
        "lease_expires_at",
        "lease_owner",
    )

    def __init__(self) -> None:
        self.attempts = 0
        self.dead = False
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
