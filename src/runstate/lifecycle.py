"""The run lifecycle of CONTRACT section 5, as data: statuses, event types, transitions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class RunStatus(StrEnum):
    """Where a run is in its lifecycle; the values are the names of CONTRACT section 5."""

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

#: CONTRACT section 5. ``RunQueued`` has no legal from-status: it is only ever the first event,
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

# (status, event type) -> next status, precomputed so the projector's hot loop is one lookup.
_NEXT: dict[tuple[RunStatus, str], RunStatus] = {
    (status, row.event_type): row.to_status
    for row in TRANSITIONS.values()
    for status in row.from_statuses
}


def is_terminal(status: RunStatus) -> bool:
    """Return True for SUCCEEDED, FAILED, CANCELLED and TIMED_OUT."""
    return status in TERMINAL_STATUSES


def next_status(status: RunStatus, event_type: str) -> RunStatus | None:
    """Return the status after appending ``event_type`` to a run in ``status``; None if illegal.

    Lifecycle events follow the table. Step events keep the status but are refused on terminal
    runs: a finished run cannot do more work. Any other (custom) type keeps the status and is
    accepted even on terminal runs, so annotations such as audit notes can follow the outcome.
    ``RunQueued`` is never legal here: it is only the first event of a bootstrap.
    """
    if event_type in TRANSITIONS:
        return _NEXT.get((status, event_type))
    if event_type in STEP_EVENT_TYPES and status in TERMINAL_STATUSES:
        return None
    return status
