"""The built-in event model, as data: statuses, event types, transitions, event schemas.

The lifecycle (which event is legal from which status, and where it leads) and the current
schema of every event type runstate itself writes. docs/design.md explains both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class RunStatus(StrEnum):
    """Where a run is in its lifecycle."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"


RUN_QUEUED = "RunQueued"
RUN_STARTED = "RunStarted"
RUN_PAUSED = "RunPaused"
RUN_RESUMED = "RunResumed"
RUN_RETRY_SCHEDULED = "RunRetryScheduled"
RUN_CANCEL_REQUESTED = "RunCancelRequested"
RUN_CANCELLED = "RunCancelled"
RUN_SUCCEEDED = "RunSucceeded"
RUN_FAILED = "RunFailed"
RUN_TIMED_OUT = "RunTimedOut"

STEP_STARTED = "StepStarted"
STEP_SUCCEEDED = "StepSucceeded"
STEP_FAILED = "StepFailed"


@dataclass(frozen=True, kw_only=True, slots=True)
class Transition:
    """One row of the lifecycle table: an event type, where it is legal, where it leads."""

    event_type: str
    from_statuses: frozenset[RunStatus]
    to_status: RunStatus


def _row(event_type: str, from_statuses: tuple[RunStatus, ...], to: RunStatus) -> Transition:
    return Transition(event_type=event_type, from_statuses=frozenset(from_statuses), to_status=to)


_S = RunStatus

#: The lifecycle table. ``RunQueued`` has no legal from-status: it is only ever the first event,
#: written by ``bootstrap_run_tx``.
TRANSITIONS: Mapping[str, Transition] = MappingProxyType(
    {
        row.event_type: row
        for row in (
            _row(RUN_QUEUED, (), _S.QUEUED),
            _row(RUN_STARTED, (_S.QUEUED,), _S.RUNNING),
            _row(RUN_PAUSED, (_S.RUNNING,), _S.PAUSED),
            _row(RUN_RESUMED, (_S.PAUSED,), _S.RUNNING),
            _row(RUN_RETRY_SCHEDULED, (_S.RUNNING,), _S.QUEUED),
            _row(RUN_CANCEL_REQUESTED, (_S.QUEUED, _S.RUNNING, _S.PAUSED), _S.CANCELLING),
            _row(RUN_CANCELLED, (_S.QUEUED, _S.PAUSED, _S.CANCELLING), _S.CANCELLED),
            _row(RUN_SUCCEEDED, (_S.RUNNING, _S.CANCELLING), _S.SUCCEEDED),
            _row(RUN_FAILED, (_S.QUEUED, _S.RUNNING, _S.CANCELLING), _S.FAILED),
            _row(RUN_TIMED_OUT, (_S.QUEUED, _S.RUNNING, _S.PAUSED), _S.TIMED_OUT),
        )
    }
)

LIFECYCLE_EVENT_TYPES: frozenset[str] = frozenset(TRANSITIONS)
STEP_EVENT_TYPES: frozenset[str] = frozenset({STEP_STARTED, STEP_SUCCEEDED, STEP_FAILED})
BUILTIN_EVENT_TYPES: frozenset[str] = LIFECYCLE_EVENT_TYPES | STEP_EVENT_TYPES
TERMINAL_STATUSES: frozenset[RunStatus] = frozenset(
    {_S.SUCCEEDED, _S.FAILED, _S.CANCELLED, _S.TIMED_OUT}
)

#: (status, event type) -> next status, precomputed so the projector's hot loop is one lookup.
NEXT_STATUS: Mapping[tuple[RunStatus, str], RunStatus] = {
    (status, row.event_type): row.to_status
    for row in TRANSITIONS.values()
    for status in row.from_statuses
}


def next_status(status: RunStatus, event_type: str) -> RunStatus | None:
    """Return the status after appending ``event_type`` to a run in ``status``; None if illegal.

    Lifecycle events follow the table. Step events keep the status but are refused on terminal
    runs: a finished run cannot do more work. Any other (custom) type keeps the status and is
    accepted even on terminal runs, so annotations such as audit notes can follow the outcome.
    ``RunQueued`` is never legal here: it is only the first event of a bootstrap.
    """
    if event_type in TRANSITIONS:
        return NEXT_STATUS.get((status, event_type))
    if event_type in STEP_EVENT_TYPES and status in TERMINAL_STATUSES:
        return None
    return status


@dataclass(frozen=True, kw_only=True, slots=True)
class EventSchema:
    """The current shape of a built-in event type."""

    version: int
    fields: frozenset[str]
    from_metadata: tuple[str, ...] = ()


#: Identity fields an event may carry, and the RunMetadata attribute each one is filled from.
METADATA_FIELDS: tuple[str, ...] = ("workflow", "workflow_version", "tenant_id", "parent_run_id")


def _schema(version: int, *fields: str, from_metadata: tuple[str, ...] = ()) -> EventSchema:
    return EventSchema(
        version=version,
        fields=frozenset(fields) | frozenset(from_metadata),
        from_metadata=from_metadata,
    )


#: The schemas of the event types runstate itself writes. Users version their own event types
#: through ``UpcasterRegistry.register``; these belong to runstate.
BUILTIN_SCHEMAS: Mapping[str, EventSchema] = MappingProxyType(
    {
        # v2 made RunQueued self-describing for outbox consumers; v1 events get the identity
        # fields from the run's metadata.
        RUN_QUEUED: _schema(2, "reason", from_metadata=METADATA_FIELDS),
        RUN_STARTED: _schema(1, "worker"),
        RUN_PAUSED: _schema(1, "reason"),
        RUN_RESUMED: _schema(1, "reason"),
        RUN_RETRY_SCHEDULED: _schema(1, "error", "reason"),
        RUN_CANCEL_REQUESTED: _schema(1, "reason"),
        RUN_CANCELLED: _schema(1, "reason"),
        RUN_SUCCEEDED: _schema(1, "output"),
        RUN_FAILED: _schema(1, "error"),
        RUN_TIMED_OUT: _schema(1, "reason", "error"),
        # v2 renamed v1's "name" to "step", the field StepSucceeded and StepFailed always used.
        STEP_STARTED: _schema(2, "step", "input"),
        STEP_SUCCEEDED: _schema(1, "step", "output"),
        STEP_FAILED: _schema(1, "step", "error"),
    }
)
