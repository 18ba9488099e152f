"""CONTRACT section 5, table-driven: every (status, event) pair, on every adapter."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from conftest import make_engine
from runstate import (
    InvalidTransition,
    RunEngine,
    RunEventInput,
    RunMetadata,
    RunStateStore,
    RunStatus,
    project,
)
from runstate.engine.lifecycle import (
    LIFECYCLE_EVENT_TYPES,
    STEP_EVENT_TYPES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    next_status,
)

StoreFactory = Callable[[], Awaitable[RunStateStore]]
S = RunStatus

# CONTRACT section 5, copied by hand so a change to the table data cannot pass unnoticed.
CONTRACT_TABLE: dict[str, tuple[set[RunStatus], RunStatus]] = {
    "RunQueued": (set(), S.QUEUED),
    "RunStarted": ({S.QUEUED}, S.RUNNING),
    "RunPaused": ({S.RUNNING}, S.PAUSED),
    "RunResumed": ({S.PAUSED}, S.RUNNING),
    "RunRetryScheduled": ({S.RUNNING}, S.QUEUED),
    "RunCancelRequested": ({S.QUEUED, S.RUNNING, S.PAUSED}, S.CANCELLING),
    "RunCancelled": ({S.QUEUED, S.PAUSED, S.CANCELLING}, S.CANCELLED),
    "RunSucceeded": ({S.RUNNING, S.CANCELLING}, S.SUCCEEDED),
    "RunFailed": ({S.QUEUED, S.RUNNING, S.CANCELLING}, S.FAILED),
    "RunTimedOut": ({S.QUEUED, S.RUNNING, S.PAUSED}, S.TIMED_OUT),
}
CUSTOM = "InvoiceEmailed"

# How the engine's own commands reach each status from a fresh queued run.
PATHS: dict[RunStatus, list[str]] = {
    S.QUEUED: [],
    S.RUNNING: ["start"],
    S.PAUSED: ["start", "pause"],
    S.CANCELLING: ["start", "cancel"],
    S.CANCELLED: ["cancel"],
    S.SUCCEEDED: ["start", "succeed"],
    S.FAILED: ["fail"],
    S.TIMED_OUT: ["time_out"],
}

EVENT_TYPES = sorted(LIFECYCLE_EVENT_TYPES) + sorted(STEP_EVENT_TYPES) + [CUSTOM]
PAIRS = [(status, event_type) for status in RunStatus for event_type in EVENT_TYPES]


def expected_after(status: RunStatus, event_type: str) -> RunStatus | None:
    """The contract's answer: the next status, or None when the event is illegal."""
    if event_type in CONTRACT_TABLE:
        legal_from, to = CONTRACT_TABLE[event_type]
        return to if status in legal_from else None
    if event_type in STEP_EVENT_TYPES and status in TERMINAL_STATUSES:
        return None
    return status


async def reach(engine: RunEngine, status: RunStatus) -> str:
    """Create a run and drive it to ``status`` with engine commands."""
    run_id = f"table-{uuid.uuid4().hex}"
    await engine.create_run(RunMetadata(run_id=run_id, workflow="table"))
    for command in PATHS[status]:
        await getattr(engine, command)(run_id)
    state = await engine.get_run(run_id)
    assert state is not None
    assert state.status is status
    return run_id


def test_table_data_matches_the_contract() -> None:
    assert set(TRANSITIONS) == set(CONTRACT_TABLE)
    for event_type, (legal_from, to) in CONTRACT_TABLE.items():
        row = TRANSITIONS[event_type]
        assert row.from_statuses == legal_from
        assert row.to_status is to
    assert {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMED_OUT} == TERMINAL_STATUSES
    assert [status.value for status in RunStatus] == [status.name for status in RunStatus]


@pytest.mark.parametrize(("status", "event_type"), PAIRS)
def test_next_status_agrees_with_the_contract(status: RunStatus, event_type: str) -> None:
    assert next_status(status, event_type) == expected_after(status, event_type)


@pytest.mark.parametrize(("status", "event_type"), PAIRS, ids=[f"{s}-{e}" for s, e in PAIRS])
async def test_engine_applies_the_table(
    engine_store_factory: StoreFactory, status: RunStatus, event_type: str
) -> None:
    store = await engine_store_factory()
    engine = make_engine(store)
    run_id = await reach(engine, status)
    before = await store.list_events(run_id)
    expected = expected_after(status, event_type)
    event = RunEventInput(type=event_type, payload={"note": "table"})
    if expected is None:
        with pytest.raises(InvalidTransition) as caught:
            await engine.record(run_id, event)
        assert caught.value.code == "INVALID_TRANSITION"
        assert caught.value.from_status == status
        assert caught.value.event_type == event_type
        assert await store.list_events(run_id) == before
        return
    state = await engine.record(run_id, event)
    after = await store.list_events(run_id)
    assert len(after) == len(before) + 1
    assert after[-1].type == event_type
    assert state.status is expected
    metadata = await store.get_run_metadata_by_run_id(run_id)
    assert metadata is not None
    assert state == project(metadata, after)
    assert state.anomalies == ()
    if event_type == "RunRetryScheduled":
        assert state.attempt == 2
    # A second engine on a fresh store object (no cache) sees the same state.
    fresh = await make_engine(await engine_store_factory(), cache_size=0).get_run(run_id)
    assert fresh == state


COMMANDS: dict[str, str | None] = {
    "start": "RunStarted",
    "pause": "RunPaused",
    "resume": "RunResumed",
    "retry": "RunRetryScheduled",
    "succeed": "RunSucceeded",
    "fail": "RunFailed",
    "time_out": "RunTimedOut",
    "cancel": None,  # depends on the status, see below
}
COMMAND_PAIRS = [(status, command) for status in RunStatus for command in COMMANDS]


def command_event(status: RunStatus, command: str) -> str:
    """The event type a command writes from ``status``."""
    event_type = COMMANDS[command]
    if event_type is not None:
        return event_type
    return "RunCancelRequested" if status is S.RUNNING else "RunCancelled"


@pytest.mark.parametrize(
    ("status", "command"), COMMAND_PAIRS, ids=[f"{s}-{c}" for s, c in COMMAND_PAIRS]
)
async def test_commands_follow_the_table(
    engine_store_factory: StoreFactory, status: RunStatus, command: str
) -> None:
    store = await engine_store_factory()
    engine = make_engine(store)
    run_id = await reach(engine, status)
    before = await store.list_events(run_id)
    event_type = command_event(status, command)
    expected = expected_after(status, event_type)
    if expected is None:
        with pytest.raises(InvalidTransition) as caught:
            await getattr(engine, command)(run_id)
        assert (caught.value.from_status, caught.value.event_type) == (status, event_type)
        assert await store.list_events(run_id) == before
        return
    state = await getattr(engine, command)(run_id)
    after = await store.list_events(run_id)
    assert [event.type for event in after[len(before) :]] == [event_type]
    assert state.status is expected


def test_cancel_semantics_match_the_brief() -> None:
    # RUNNING asks first; QUEUED and PAUSED are cancelled at once; CANCELLING confirms.
    assert command_event(S.RUNNING, "cancel") == "RunCancelRequested"
    for status in (S.QUEUED, S.PAUSED, S.CANCELLING):
        assert expected_after(status, command_event(status, "cancel")) is S.CANCELLED
