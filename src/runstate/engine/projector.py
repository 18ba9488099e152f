"""The pure projector: fold a run's metadata and event log into its current ``RunState``.

``project`` does no I/O, reads no clock and never raises for a bad stored log: an event that
the lifecycle table forbids (written straight through the store, say) is recorded as an
``Anomaly`` and has no effect; unknown event types and fields are kept and counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from ..types import JSON, RunEventPersisted, RunMetadata
from .lifecycle import (
    BUILTIN_SCHEMAS,
    NEXT_STATUS,
    RUN_CANCEL_REQUESTED,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_PAUSED,
    RUN_QUEUED,
    RUN_RESUMED,
    RUN_RETRY_SCHEDULED,
    RUN_STARTED,
    RUN_SUCCEEDED,
    RUN_TIMED_OUT,
    STEP_EVENT_TYPES,
    STEP_STARTED,
    STEP_SUCCEEDED,
    TERMINAL_STATUSES,
    RunStatus,
)
from .upcasting import UpcasterRegistry

_BUILTIN_REGISTRY = UpcasterRegistry()
_KNOWN_FIELDS = {event_type: schema.fields for event_type, schema in BUILTIN_SCHEMAS.items()}
_FILL_TYPES = frozenset(t for t, schema in BUILTIN_SCHEMAS.items() if schema.from_metadata)


@dataclass(frozen=True, kw_only=True, slots=True)
class Anomaly:
    """A stored event the projector could not apply as written; ``kind`` says why.

    Kinds: ``illegal_transition`` (forbidden from ``from_status``; ignored), ``not_bootstrapped``
    (the log does not start with RunQueued; applied anyway), ``out_of_order`` (seq not after the
    last one; ignored), ``seq_gap`` (seqs skipped; applied), ``foreign_run`` (another run's event;
    ignored), ``upcast_failed`` (applied with the payload as far as upcasting got).
    """

    seq: int
    event_id: str
    event_type: str
    from_status: RunStatus
    kind: str
    detail: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class UnknownField:
    """A payload field the current schema of a built-in event type does not know (kept)."""

    seq: int
    event_type: str
    field: str


@dataclass(frozen=True, kw_only=True, slots=True)
class RunState:
    """Everything known about one run, as of event ``last_seq``."""

    run_id: str
    workflow: str
    workflow_version: str | None
    tenant_id: str | None
    parent_run_id: str | None
    input: JSON
    labels: Mapping[str, str]
    status: RunStatus
    attempt: int
    last_seq: int
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None = None
    started_at: datetime | None = None
    last_started_at: datetime | None = None
    paused_at: datetime | None = None
    resumed_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested: bool = False
    cancel_reason: JSON = None
    output: JSON = None
    error: JSON = None
    last_error: JSON = None
    current_step: str | None = None
    steps_started: int = 0
    steps_succeeded: int = 0
    steps_failed: int = 0
    unknown_events: tuple[RunEventPersisted, ...] = ()
    unknown_fields: tuple[UnknownField, ...] = ()
    anomalies: tuple[Anomaly, ...] = ()

    @property
    def is_terminal(self) -> bool:
        """True once the run has succeeded, failed, been cancelled or timed out."""
        return self.status in TERMINAL_STATUSES

    @property
    def unknown_event_count(self) -> int:
        """How many events had a type the projector has no rule for (custom types included)."""
        return len(self.unknown_events)

    @property
    def unknown_field_count(self) -> int:
        """How many payload fields of built-in events the current schemas do not know."""
        return len(self.unknown_fields)


def initial_state(metadata: RunMetadata) -> RunState:
    """Return the state of a run whose log is still empty."""
    return RunState(
        run_id=metadata.run_id,
        workflow=metadata.workflow,
        workflow_version=metadata.workflow_version,
        tenant_id=metadata.tenant_id,
        parent_run_id=metadata.parent_run_id,
        input=metadata.input,
        labels=metadata.labels,
        status=RunStatus.QUEUED,
        attempt=1,
        last_seq=0,
        created_at=metadata.created_at,
        updated_at=metadata.created_at,
    )


def project(
    metadata: RunMetadata,
    events: Iterable[RunEventPersisted],
    *,
    upcasters: UpcasterRegistry | None = None,
) -> RunState:
    """Fold ``events`` (in seq order) into the run's state; pure, deterministic, linear."""
    return advance(metadata, initial_state(metadata), events, upcasters=upcasters)


def advance(
    metadata: RunMetadata,
    state: RunState,
    events: Iterable[RunEventPersisted],
    *,
    upcasters: UpcasterRegistry | None = None,
) -> RunState:
    """Fold more events into ``state``: ``advance(m, project(m, a), b) == project(m, a + b)``."""
    registry = _BUILTIN_REGISTRY if upcasters is None else upcasters
    current_versions = registry.versions()
    run_id = metadata.run_id
    # The hot loop works on locals: attribute writes on a frozen dataclass would cost far more.
    status = state.status
    attempt = state.attempt
    last_seq = state.last_seq
    updated_at = state.updated_at
    queued_at = state.queued_at
    started_at = state.started_at
    last_started_at = state.last_started_at
    paused_at = state.paused_at
    resumed_at = state.resumed_at
    cancel_requested_at = state.cancel_requested_at
    finished_at = state.finished_at
    cancel_requested = state.cancel_requested
    cancel_reason = state.cancel_reason
    output = state.output
    error = state.error
    last_error = state.last_error
    current_step = state.current_step
    steps_started = state.steps_started
    steps_succeeded = state.steps_succeeded
    steps_failed = state.steps_failed
    unknown_events = list(state.unknown_events)
    unknown_fields = list(state.unknown_fields)
    anomalies = list(state.anomalies)
    terminal = TERMINAL_STATUSES
    next_of = NEXT_STATUS
    known_fields = _KNOWN_FIELDS
    fill_types = _FILL_TYPES
    step_types = STEP_EVENT_TYPES

    for event in events:
        event_type = event.type
        seq = event.seq
        if seq <= last_seq or event.run_id != run_id:
            kind = "out_of_order" if event.run_id == run_id else "foreign_run"
            anomalies.append(_anomaly(event, status, kind, f"last seq was {last_seq}"))
            continue
        if seq != last_seq + 1:
            anomalies.append(_anomaly(event, status, "seq_gap", f"last seq was {last_seq}"))
        bootstrapping = last_seq == 0
        last_seq = seq
        updated_at = event.recorded_at
        at = event.occurred_at or event.recorded_at

        payload = event.payload
        if event.schema_version != current_versions.get(event_type, 1) or event_type in fill_types:
            upcasted = registry.upcast_payload(metadata, event)
            payload = upcasted.payload
            if upcasted.problem is not None:
                anomalies.append(_anomaly(event, status, "upcast_failed", upcasted.problem))
            if event_type not in known_fields and payload is not event.payload:
                event = dataclasses.replace(
                    event, payload=payload, schema_version=upcasted.schema_version
                )
        if bootstrapping and event_type != RUN_QUEUED:
            anomalies.append(
                _anomaly(event, status, "not_bootstrapped", "the first event is not RunQueued")
            )
        known = known_fields.get(event_type)
        if known is None:
            unknown_events.append(event)
            continue
        if payload and not known.issuperset(payload):
            unknown_fields.extend(
                UnknownField(seq=seq, event_type=event_type, field=name)
                for name in payload
                if name not in known
            )
        if bootstrapping and event_type == RUN_QUEUED:
            queued_at = at
            continue

        if event_type in step_types:
            if status in terminal:
                anomalies.append(_anomaly(event, status, "illegal_transition"))
                continue
            step = payload.get("step")
            if event_type == STEP_STARTED:
                steps_started += 1
                current_step = step if isinstance(step, str) else None
            else:
                if event_type == STEP_SUCCEEDED:
                    steps_succeeded += 1
                else:
                    steps_failed += 1
                    last_error = payload.get("error")
                if step is None or step == current_step:
                    current_step = None
            continue

        # Every other known type is a lifecycle event; RunQueued after seq 1 has no row here.
        to_status = next_of.get((status, event_type))
        if to_status is None:
            anomalies.append(_anomaly(event, status, "illegal_transition"))
            continue
        status = to_status
        if event_type == RUN_STARTED:
            if started_at is None:
                started_at = at
            last_started_at = at
        elif event_type == RUN_SUCCEEDED:
            output = payload.get("output")
            finished_at = at
        elif event_type == RUN_FAILED:
            error = payload.get("error")
            last_error = error
            finished_at = at
        elif event_type == RUN_RETRY_SCHEDULED:
            attempt += 1
            queued_at = at
            current_step = None
            retry_error = payload.get("error")
            if retry_error is not None:
                last_error = retry_error
        elif event_type == RUN_PAUSED:
            paused_at = at
        elif event_type == RUN_RESUMED:
            resumed_at = at
        elif event_type == RUN_CANCEL_REQUESTED:
            cancel_requested = True
            cancel_requested_at = at
            cancel_reason = payload.get("reason")
        elif event_type == RUN_CANCELLED:
            if not cancel_requested:
                cancel_requested = True
                cancel_requested_at = at
            reason = payload.get("reason")
            if reason is not None:
                cancel_reason = reason
            finished_at = at
        elif event_type == RUN_TIMED_OUT:
            error = payload.get("error")
            if error is None:
                error = {"type": "TimedOut", "message": payload.get("reason") or "run timed out"}
            last_error = error
            finished_at = at

    return RunState(
        run_id=state.run_id,
        workflow=state.workflow,
        workflow_version=state.workflow_version,
        tenant_id=state.tenant_id,
        parent_run_id=state.parent_run_id,
        input=state.input,
        labels=state.labels,
        status=status,
        attempt=attempt,
        last_seq=last_seq,
        created_at=state.created_at,
        updated_at=updated_at,
        queued_at=queued_at,
        started_at=started_at,
        last_started_at=last_started_at,
        paused_at=paused_at,
        resumed_at=resumed_at,
        cancel_requested_at=cancel_requested_at,
        finished_at=finished_at,
        cancel_requested=cancel_requested,
        cancel_reason=cancel_reason,
        output=output,
        error=error,
        last_error=last_error,
        current_step=current_step,
        steps_started=steps_started,
        steps_succeeded=steps_succeeded,
        steps_failed=steps_failed,
        unknown_events=tuple(unknown_events),
        unknown_fields=tuple(unknown_fields),
        anomalies=tuple(anomalies),
    )


def _anomaly(event: RunEventPersisted, status: RunStatus, kind: str, detail: str = "") -> Anomaly:
    return Anomaly(
        seq=event.seq,
        event_id=event.event_id,
        event_type=event.type,
        from_status=status,
        kind=kind,
        detail=detail,
    )
