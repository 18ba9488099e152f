"""The pure projector and Option D schema evolution."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstate import (
    InvalidInput,
    RunBootstrapInput,
    RunEngine,
    RunEventInput,
    RunEventPersisted,
    RunMetadata,
    RunStateStore,
    RunStatus,
    UpcasterRegistry,
    project,
)
from runstate.engine.projector import advance, initial_state
from runstate.types import JSON

StoreFactory = Callable[[], Awaitable[RunStateStore]]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
METADATA = RunMetadata(
    run_id="run-1",
    workflow="billing",
    workflow_version="v7",
    tenant_id="acme",
    parent_run_id="parent-9",
    input={"invoice": 42},
    labels={"team": "payments"},
    created_at=T0,
)


def persisted(
    seq: int,
    event_type: str,
    payload: dict[str, JSON] | None = None,
    *,
    schema_version: int = 1,
    run_id: str = "run-1",
    occurred_at: datetime | None = None,
) -> RunEventPersisted:
    """Build a stored event by hand, as a store would return it."""
    return RunEventPersisted(
        run_id=run_id,
        seq=seq,
        position=seq * 10,
        type=event_type,
        payload=payload or {},
        event_id=f"e-{seq}",
        schema_version=schema_version,
        occurred_at=occurred_at,
        recorded_at=T0 + timedelta(seconds=seq),
    )


def log(*types: str) -> list[RunEventPersisted]:
    """A log of payload-less events of the given types, seq 1.."""
    return [
        persisted(i, t, schema_version=2 if t == "RunQueued" else 1) for i, t in enumerate(types, 1)
    ]


# -- the basics -----------------------------------------------------------------------------


def test_a_full_run_projects_every_field() -> None:
    events = [
        persisted(1, "RunQueued", {"workflow": "billing"}, schema_version=2),
        persisted(2, "RunStarted", {"worker": "w-1"}),
        persisted(3, "StepStarted", {"step": "charge"}, schema_version=2),
        persisted(4, "StepFailed", {"step": "charge", "error": "card declined"}),
        persisted(5, "RunRetryScheduled", {"error": "card declined"}),
        persisted(6, "RunStarted", occurred_at=T0 + timedelta(minutes=5)),
        persisted(7, "StepStarted", {"step": "charge"}, schema_version=2),
        persisted(8, "RunPaused", {"reason": "ops"}),
        persisted(9, "RunResumed"),
        persisted(10, "StepSucceeded", {"step": "charge"}),
        persisted(11, "StepStarted", {"step": "email"}, schema_version=2),
        persisted(12, "RunSucceeded", {"output": {"paid": True}}),
    ]
    state = project(METADATA, events)
    assert state.status is RunStatus.SUCCEEDED
    assert state.is_terminal
    assert (state.attempt, state.last_seq) == (2, 12)
    assert (state.workflow, state.workflow_version, state.tenant_id) == ("billing", "v7", "acme")
    assert state.parent_run_id == "parent-9"
    assert state.input == {"invoice": 42}
    assert state.created_at == T0
    assert state.queued_at == T0 + timedelta(seconds=5)  # the retry re-queued it
    assert state.started_at == T0 + timedelta(seconds=2)
    assert state.last_started_at == T0 + timedelta(minutes=5)  # occurred_at wins
    assert state.paused_at == T0 + timedelta(seconds=8)
    assert state.resumed_at == T0 + timedelta(seconds=9)
    assert state.finished_at == state.updated_at == T0 + timedelta(seconds=12)
    assert state.output == {"paid": True}
    assert state.error is None
    assert state.last_error == "card declined"
    assert (state.steps_started, state.steps_succeeded, state.steps_failed) == (3, 1, 1)
    assert state.current_step == "email"
    assert state.anomalies == ()
    assert state.unknown_event_count == state.unknown_field_count == 0


def test_empty_log_is_the_initial_state() -> None:
    state = project(METADATA, [])
    assert state == initial_state(METADATA)
    assert (state.status, state.attempt, state.last_seq) == (RunStatus.QUEUED, 1, 0)
    assert state.updated_at == METADATA.created_at


def test_cancellation_fields() -> None:
    state = project(
        METADATA,
        [
            *log("RunQueued", "RunStarted"),
            persisted(3, "RunCancelRequested", {"reason": "user"}),
            persisted(4, "RunCancelled"),
        ],
    )
    assert state.status is RunStatus.CANCELLED
    assert state.cancel_requested
    assert state.cancel_requested_at == T0 + timedelta(seconds=3)
    assert state.cancel_reason == "user"
    assert state.finished_at == T0 + timedelta(seconds=4)


def test_timed_out_run_gets_an_error() -> None:
    state = project(METADATA, [*log("RunQueued"), persisted(2, "RunTimedOut", {"reason": "1h"})])
    assert state.status is RunStatus.TIMED_OUT
    assert state.error == {"type": "TimedOut", "message": "1h"}


def test_projection_is_deterministic_and_does_not_touch_its_input() -> None:
    events = log("RunQueued", "RunStarted", "Custom", "RunFailed")
    snapshot = [(e.type, dict(e.payload)) for e in events]
    assert project(METADATA, events) == project(METADATA, list(events))
    assert project(METADATA, iter(events)) == project(METADATA, events)
    assert [(e.type, dict(e.payload)) for e in events] == snapshot


# -- robustness: what a bad stored log does -----------------------------------------------------


def test_illegal_stored_sequence_is_an_anomaly_not_a_crash() -> None:
    events = [
        *log("RunQueued", "RunStarted", "RunSucceeded"),
        persisted(4, "RunStarted"),
        persisted(5, "StepStarted", {"step": "late"}, schema_version=2),
        persisted(6, "RunQueued", schema_version=2),
        persisted(7, "Annotation", {"text": "after the fact"}),
    ]
    state = project(METADATA, events)
    assert state.status is RunStatus.SUCCEEDED
    assert state.last_seq == 7
    assert [(a.seq, a.kind, a.from_status) for a in state.anomalies] == [
        (4, "illegal_transition", RunStatus.SUCCEEDED),
        (5, "illegal_transition", RunStatus.SUCCEEDED),
        (6, "illegal_transition", RunStatus.SUCCEEDED),
    ]
    assert state.steps_started == 0
    assert state.unknown_event_count == 1  # custom events are fine on terminal runs


def test_log_not_starting_with_run_queued_and_seq_problems() -> None:
    events = [
        persisted(1, "RunStarted"),
        persisted(3, "StepStarted", {"step": "a"}, schema_version=2),
        persisted(2, "StepSucceeded", {"step": "a"}),
        persisted(4, "RunSucceeded", run_id="someone-else"),
    ]
    state = project(METADATA, events)
    assert [(a.seq, a.kind) for a in state.anomalies] == [
        (1, "not_bootstrapped"),
        (3, "seq_gap"),
        (2, "out_of_order"),
        (4, "foreign_run"),
    ]
    assert state.status is RunStatus.RUNNING
    assert state.last_seq == 3


def test_unknown_types_and_fields_are_kept_and_counted() -> None:
    events = [
        *log("RunQueued", "RunStarted"),
        persisted(3, "DeployApproved", {"by": "ana"}),
        persisted(4, "RunPaused", {"reason": "x", "ticket": "OPS-1", "sev": 2}),
        persisted(5, "DeployApproved", {"by": "bob"}),
    ]
    state = project(METADATA, events)
    assert state.status is RunStatus.PAUSED
    assert state.unknown_event_count == 2
    assert [e.payload for e in state.unknown_events] == [{"by": "ana"}, {"by": "bob"}]
    assert state.unknown_field_count == 2
    assert {(f.seq, f.event_type, f.field) for f in state.unknown_fields} == {
        (4, "RunPaused", "ticket"),
        (4, "RunPaused", "sev"),
    }


# -- Option D: upcasting and filling from metadata ------------------------------------------------


def test_run_queued_v1_is_filled_from_metadata() -> None:
    old = persisted(1, "RunQueued", {}, schema_version=1)
    state = project(METADATA, [old])
    assert (state.workflow, state.tenant_id, state.parent_run_id) == ("billing", "acme", "parent-9")
    assert state.unknown_field_count == 0
    assert state.anomalies == ()
    upcasted = UpcasterRegistry().upcast(METADATA, old)
    assert upcasted.schema_version == 2
    assert upcasted.payload == {
        "workflow": "billing",
        "workflow_version": "v7",
        "tenant_id": "acme",
        "parent_run_id": "parent-9",
    }
    assert old.payload == {}  # the stored event is never changed


def test_step_started_v1_field_is_renamed_by_the_builtin_upcaster() -> None:
    events = [*log("RunQueued", "RunStarted"), persisted(3, "StepStarted", {"name": "charge"})]
    state = project(METADATA, events)
    assert state.current_step == "charge"
    assert state.unknown_field_count == 0
    current = UpcasterRegistry().upcast(METADATA, events[2])
    assert (current.schema_version, current.payload) == (2, {"step": "charge"})


async def test_old_schema_events_written_through_the_store(store_factory: StoreFactory) -> None:
    store = await store_factory()
    run_id = f"old-{uuid.uuid4().hex}"
    # An old writer: RunQueued v1 without identity fields, StepStarted v1 with "name".
    await store.bootstrap_run_tx(
        RunBootstrapInput(
            metadata=RunMetadata(run_id=run_id, workflow="legacy", tenant_id="t-1"),
            first_events=[RunEventInput(type="RunQueued"), RunEventInput(type="RunStarted")],
        )
    )
    await store.append_and_enqueue_tx(
        run_id,
        [
            RunEventInput(type="StepStarted", payload={"name": "fetch"}, schema_version=1),
            RunEventInput(type="LegacyPing", payload={"n": 1}),
        ],
    )
    engine = RunEngine(store)
    state = await engine.get_run(run_id)
    assert state is not None
    assert (state.workflow, state.tenant_id, state.status) == ("legacy", "t-1", RunStatus.RUNNING)
    assert state.current_step == "fetch"
    assert state.unknown_event_count == 1
    assert state.anomalies == ()
    # New events from the engine are current; old and new project together.
    state = await engine.record(
        run_id, RunEventInput(type="StepSucceeded", payload={"step": "fetch"})
    )
    assert state.current_step is None
    events = await store.list_events(run_id)
    assert [e.schema_version for e in events] == [1, 1, 1, 1, 1]
    metadata = await store.get_run_metadata_by_run_id(run_id)
    assert metadata is not None
    assert project(metadata, events) == state


def test_user_upcasters_migrate_custom_events_step_by_step() -> None:
    registry = UpcasterRegistry()

    @registry.upcaster("PaymentCaptured", 1)
    def cents_to_amount(payload: dict[str, JSON], metadata: RunMetadata) -> dict[str, JSON]:
        payload["amount"] = {"cents": payload.pop("cents"), "currency": "EUR"}
        return payload

    @registry.upcaster("PaymentCaptured", 2)
    def add_tenant(payload: dict[str, JSON], metadata: RunMetadata) -> dict[str, JSON]:
        payload["tenant_id"] = metadata.tenant_id
        return payload

    assert registry.current_version("PaymentCaptured") == 3
    events = [
        *log("RunQueued"),
        persisted(2, "PaymentCaptured", {"cents": 995}, schema_version=1),
        persisted(
            3, "PaymentCaptured", {"amount": {"cents": 5, "currency": "USD"}}, schema_version=2
        ),
        persisted(4, "PaymentCaptured", {"amount": {}, "tenant_id": "x"}, schema_version=3),
    ]
    state = project(METADATA, events, upcasters=registry)
    assert [(e.schema_version, e.payload) for e in state.unknown_events] == [
        (3, {"amount": {"cents": 995, "currency": "EUR"}, "tenant_id": "acme"}),
        (3, {"amount": {"cents": 5, "currency": "USD"}, "tenant_id": "acme"}),
        (3, {"amount": {}, "tenant_id": "x"}),
    ]
    assert events[1].payload == {"cents": 995}
    # Without the registry the events are still kept, as stored.
    assert project(METADATA, events).unknown_events == tuple(events[1:])


def _broken(payload: dict[str, JSON], metadata: RunMetadata) -> dict[str, JSON]:
    return {"moved": payload["missing"]}


def test_broken_or_missing_upcasters_do_not_break_the_projection() -> None:
    registry = UpcasterRegistry()
    registry.register("A", 1, lambda payload, metadata: {**payload, "v2": True})
    registry.register("A", 3, lambda payload, metadata: payload)  # no 2 -> 3
    registry.register("B", 1, _broken)
    events = [
        *log("RunQueued"),
        persisted(2, "A", {"x": 1}),
        persisted(3, "B", {"y": 1}),
    ]
    state = project(METADATA, events, upcasters=registry)
    assert [(a.seq, a.kind) for a in state.anomalies] == [
        (2, "upcast_failed"),
        (3, "upcast_failed"),
    ]
    assert "no upcaster registered for A v2" in state.anomalies[0].detail
    assert "KeyError" in state.anomalies[1].detail
    assert [e.payload for e in state.unknown_events] == [{"x": 1, "v2": True}, {"y": 1}]


def test_registry_refuses_misuse() -> None:
    registry = UpcasterRegistry()
    with pytest.raises(InvalidInput, match="built-in"):
        registry.register("StepStarted", 2, lambda payload, metadata: payload)
    registry.register("X", 1, lambda payload, metadata: payload)
    with pytest.raises(InvalidInput, match="already"):
        registry.register("X", 1, lambda payload, metadata: payload)
    with pytest.raises(InvalidInput):
        registry.register("X", 0, lambda payload, metadata: payload)
    assert registry.versions()["X"] == 2
    assert registry.current_version("Never") == 1


# -- incremental projection -------------------------------------------------------------------

EVENT_TYPES = [
    "RunQueued",
    "RunStarted",
    "RunPaused",
    "RunResumed",
    "RunRetryScheduled",
    "RunCancelRequested",
    "RunCancelled",
    "RunSucceeded",
    "RunFailed",
    "RunTimedOut",
    "StepStarted",
    "StepSucceeded",
    "StepFailed",
    "Custom",
]


@settings(max_examples=200, deadline=None)
@given(
    types=st.lists(st.sampled_from(EVENT_TYPES), max_size=40),
    split=st.integers(min_value=0, max_value=40),
    versions=st.lists(st.sampled_from([1, 2]), min_size=40, max_size=40),
)
def test_advance_equals_projecting_everything(
    types: list[str], split: int, versions: list[int]
) -> None:
    events = [
        persisted(i, t, {"step": "s", "extra": i} if i % 3 else {}, schema_version=versions[i - 1])
        for i, t in enumerate(types, 1)
    ]
    whole = project(METADATA, events)
    head = project(METADATA, events[:split])
    assert advance(METADATA, head, events[split:]) == whole
    assert whole.last_seq == len(events)
    # Whatever the log, the status is one the table can reach.
    assert whole.status in RunStatus
