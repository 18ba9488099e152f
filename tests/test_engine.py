"""The run engine: creation, commands, races, idempotency, and a randomized model test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_engine
from runstate import (
    AppendResult,
    ConcurrencyConflict,
    InvalidInput,
    InvalidTransition,
    MemoryStore,
    RunAlreadyExists,
    RunBootstrapInput,
    RunEngine,
    RunEventInput,
    RunEventPersisted,
    RunMetadata,
    RunNotFound,
    RunState,
    RunStateStore,
    RunStatus,
    StoreUnavailable,
    UpcasterRegistry,
    open_store,
    project,
)

StoreFactory = Callable[[], Awaitable[RunStateStore]]


def new_metadata(**fields: object) -> RunMetadata:
    """Metadata for a fresh run id."""
    run_id = f"eng-{uuid.uuid4().hex}"
    return RunMetadata(run_id=run_id, workflow="orders", tenant_id="acme", **fields)  # type: ignore[arg-type]


async def assert_consistent(store: RunStateStore, state: RunState) -> list[RunEventPersisted]:
    """Assert ``state`` is exactly the projection of the stored log up to its seq."""
    metadata = await store.get_run_metadata_by_run_id(state.run_id)
    assert metadata is not None
    events = await store.list_events(state.run_id)
    assert state == project(metadata, events[: state.last_seq])
    return events


class WrappedStore:
    """A store that delegates everything; tests override methods to inject races and faults."""

    def __init__(self, inner: RunStateStore) -> None:
        self.inner = inner
        self.guard_reads = 0

    async def bootstrap_run_tx(self, input: RunBootstrapInput) -> AppendResult:
        return await self.inner.bootstrap_run_tx(input)

    async def append_and_enqueue_tx(
        self, run_id: str, events: Sequence[RunEventInput], *, expected_seq: int | None = None
    ) -> AppendResult:
        return await self.inner.append_and_enqueue_tx(run_id, events, expected_seq=expected_seq)

    async def list_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[RunEventPersisted]:
        return await self.inner.list_events(run_id, after_seq=after_seq, limit=limit)

    async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        self.guard_reads += 1
        return await self.inner.get_run_metadata_by_run_id(run_id)

    async def close(self) -> None:
        await self.inner.close()


class YieldingStore(WrappedStore):
    """Suspends before every call, so concurrent commands interleave even on memory://."""

    def __init__(
        self, inner: RunStateStore, *, pauses: Sequence[int] = (1,), write_pause: int = 0
    ) -> None:
        super().__init__(inner)
        self.pauses = pauses
        self.write_pause = write_pause
        self.calls = 0
        self.conflicts = 0

    async def _pause(self, extra: int = 0) -> None:
        # Cycle through the given pause lengths: varied, yet deterministic interleavings.
        count = self.pauses[self.calls % len(self.pauses)] + extra
        self.calls += 1
        for _ in range(count):
            await asyncio.sleep(0)

    async def append_and_enqueue_tx(
        self, run_id: str, events: Sequence[RunEventInput], *, expected_seq: int | None = None
    ) -> AppendResult:
        await self._pause(self.write_pause)
        try:
            return await super().append_and_enqueue_tx(run_id, events, expected_seq=expected_seq)
        except ConcurrencyConflict:
            self.conflicts += 1
            raise

    async def list_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[RunEventPersisted]:
        await self._pause()
        return await super().list_events(run_id, after_seq=after_seq, limit=limit)

    async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        await self._pause()
        return await super().get_run_metadata_by_run_id(run_id)


# -- create_run -------------------------------------------------------------------------------


async def test_create_run_queued(engine_store_factory: StoreFactory) -> None:
    store = await engine_store_factory()
    metadata = new_metadata(workflow_version="v2", input={"sku": "x"})
    state = await make_engine(store).create_run(metadata)
    assert (state.status, state.attempt, state.last_seq) == (RunStatus.QUEUED, 1, 1)
    assert state.queued_at is not None
    assert state.started_at is None
    (event,) = await assert_consistent(store, state)
    assert (event.type, event.schema_version) == ("RunQueued", 2)
    assert event.payload == {
        "workflow": "orders",
        "workflow_version": "v2",
        "tenant_id": "acme",
        "parent_run_id": None,
    }


async def test_create_run_sync_is_queued_then_running_in_one_write(
    engine_store_factory: StoreFactory,
) -> None:
    store = await engine_store_factory()
    state = await make_engine(store).create_run(new_metadata(), mode="sync")
    assert (state.status, state.last_seq) == (RunStatus.RUNNING, 2)
    assert state.started_at is not None
    events = await assert_consistent(store, state)
    assert [e.type for e in events] == ["RunQueued", "RunStarted"]


async def test_create_run_refuses_unknown_mode() -> None:
    engine = RunEngine(await open_store("memory://"))
    metadata = new_metadata()
    with pytest.raises(InvalidInput, match="mode"):
        await engine.create_run(metadata, mode="eager")  # type: ignore[arg-type]
    assert await engine.get_run(metadata.run_id) is None


async def test_already_exists_from_the_guard(engine_store_factory: StoreFactory) -> None:
    store = WrappedStore(await engine_store_factory())
    engine = make_engine(store)
    metadata = new_metadata()
    await engine.create_run(metadata)
    with pytest.raises(RunAlreadyExists) as caught:
        await make_engine(store).create_run(metadata, mode="sync")
    assert caught.value.code == "RUN_ALREADY_EXISTS"
    assert caught.value.same_request is False
    assert [e.type for e in await store.list_events(metadata.run_id)] == ["RunQueued"]


async def test_already_exists_from_the_store_when_the_guard_loses_the_race(
    engine_store_factory: StoreFactory,
) -> None:
    inner = await engine_store_factory()
    metadata = new_metadata()

    class RacingStore(WrappedStore):
        async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
            seen = await super().get_run_metadata_by_run_id(run_id)
            # Another creator bootstraps right after our guard read.
            await inner.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_id, workflow="rival"),
                    first_events=[RunEventInput(type="RunQueued")],
                )
            )
            return seen

    store = RacingStore(inner)
    with pytest.raises(RunAlreadyExists) as caught:
        await make_engine(store).create_run(metadata, idempotency_key="req-1")
    assert store.guard_reads == 1
    assert caught.value.same_request is False
    stored = await inner.get_run_metadata_by_run_id(metadata.run_id)
    assert stored is not None
    assert stored.workflow == "rival"


async def test_retry_after_ambiguous_commit_returns_the_run(
    engine_store_factory: StoreFactory,
) -> None:
    inner = await engine_store_factory()

    class LostReplyStore(WrappedStore):
        async def bootstrap_run_tx(self, input: RunBootstrapInput) -> AppendResult:
            await super().bootstrap_run_tx(input)
            raise StoreUnavailable("connection lost after COMMIT")

    engine = make_engine(LostReplyStore(inner))
    metadata = new_metadata()
    with pytest.raises(StoreUnavailable):
        await engine.create_run(metadata, mode="sync", idempotency_key="req-7")
    # The guard recognises our own earlier request.
    state = await engine.create_run(metadata, mode="sync", idempotency_key="req-7")
    assert state.status is RunStatus.RUNNING
    await assert_consistent(inner, state)
    # Without the key, or with another one, it is someone else's run.
    with pytest.raises(RunAlreadyExists):
        await engine.create_run(metadata, mode="sync")
    with pytest.raises(RunAlreadyExists):
        await engine.create_run(metadata, mode="sync", idempotency_key="req-8")


async def test_store_same_request_is_treated_as_success(engine_store_factory: StoreFactory) -> None:
    inner = await engine_store_factory()
    metadata = new_metadata()

    class BlindGuardStore(WrappedStore):
        hidden = True

        async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
            if self.hidden:  # a stale replica: the guard cannot see the committed run yet
                self.hidden = False
                return None
            return await super().get_run_metadata_by_run_id(run_id)

    await make_engine(inner).create_run(metadata, idempotency_key="req-1")
    store = BlindGuardStore(inner)
    state = await make_engine(store).create_run(metadata, idempotency_key="req-1")
    assert state.status is RunStatus.QUEUED
    assert state.last_seq == 1


# -- commands -----------------------------------------------------------------------------------


async def test_a_run_through_its_life(engine_store_factory: StoreFactory) -> None:
    store = await engine_store_factory()
    engine = make_engine(store)
    run_id = (await engine.create_run(new_metadata())).run_id
    states = [
        await engine.start(run_id, worker="w1"),
        await engine.record(run_id, RunEventInput(type="StepStarted", payload={"step": "a"})),
        await engine.pause(run_id, reason="maintenance"),
        await engine.resume(run_id),
        await engine.record(run_id, RunEventInput(type="StepFailed", payload={"step": "a"})),
        await engine.retry(run_id, error={"message": "boom"}),
        await engine.start(run_id),
        await engine.succeed(run_id, output={"total": 3}),
        await engine.record(run_id, RunEventInput(type="AuditNote", payload={"by": "ops"})),
    ]
    final = states[-1]
    assert final.status is RunStatus.SUCCEEDED
    assert final.attempt == 2
    assert final.output == {"total": 3}
    assert final.last_error == {"message": "boom"}
    assert final.unknown_event_count == 1
    for state in states:
        await assert_consistent(store, state)
    with pytest.raises(InvalidTransition) as caught:
        await engine.record(run_id, RunEventInput(type="StepStarted", payload={"step": "b"}))
    assert caught.value.from_status == "SUCCEEDED"


async def test_cancel_from_running_asks_then_confirms(engine_store_factory: StoreFactory) -> None:
    store = await engine_store_factory()
    engine = make_engine(store)
    run_id = (await engine.create_run(new_metadata(), mode="sync")).run_id
    asked = await engine.cancel(run_id, reason="user")
    assert (asked.status, asked.cancel_requested) == (RunStatus.CANCELLING, True)
    done = await engine.cancel(run_id)
    assert done.status is RunStatus.CANCELLED
    assert done.cancel_reason == "user"
    with pytest.raises(InvalidTransition):
        await engine.cancel(run_id)


async def test_ten_concurrent_starts_write_one_run_started(
    engine_store_factory: StoreFactory,
) -> None:
    store = await engine_store_factory()
    racers = [YieldingStore(await engine_store_factory()) for _ in range(10)]
    # One engine (serialized by its per-run lock), then ten engines racing through the store.
    for engines in ([make_engine(store)] * 10, [make_engine(racer) for racer in racers]):
        run_id = (await make_engine(store).create_run(new_metadata())).run_id
        outcomes = await asyncio.gather(
            *(engine.start(run_id) for engine in engines), return_exceptions=True
        )
        winners = [o for o in outcomes if isinstance(o, RunState)]
        losers = [o for o in outcomes if not isinstance(o, RunState)]
        assert len(winners) == 1
        assert len(losers) == 9
        for loser in losers:
            assert isinstance(loser, InvalidTransition), repr(loser)
            assert loser.from_status == "RUNNING"
        events = await store.list_events(run_id)
        assert [e.type for e in events] == ["RunQueued", "RunStarted"]
        await assert_consistent(store, winners[0])
    if isinstance(store, MemoryStore):
        # All ten read seq 1 before anyone wrote: nine conflicts, re-read, then refusal.
        assert sum(racer.conflicts for racer in racers) == 9


async def test_idempotency_key_makes_commands_retryable(engine_store_factory: StoreFactory) -> None:
    store = await engine_store_factory()
    engine = make_engine(store)
    run_id = (await engine.create_run(new_metadata())).run_id
    first = await engine.start(run_id, idempotency_key="start-1")
    again = await make_engine(store).start(run_id, idempotency_key="start-1")
    assert first == again
    await engine.succeed(run_id, output=1, idempotency_key="done-1")
    # Retried after the run moved on: the key is in the log, so no error and no write.
    late = await engine.start(run_id, idempotency_key="start-1")
    assert late.status is RunStatus.SUCCEEDED
    events = await store.list_events(run_id)
    assert [e.type for e in events] == ["RunQueued", "RunStarted", "RunSucceeded"]
    assert [e.event_id for e in events[1:]] == ["start-1", "done-1"]
    note = RunEventInput(type="Note", payload={"n": 1})
    await engine.record(run_id, note)
    await engine.record(run_id, note)
    assert len(await store.list_events(run_id)) == 4


async def test_record_on_unknown_run_raises_and_creates_nothing(
    engine_store_factory: StoreFactory,
) -> None:
    store = await engine_store_factory()
    engine = make_engine(store)
    with pytest.raises(RunNotFound) as caught:
        await engine.record("ghost", RunEventInput(type="StepStarted", payload={"step": "a"}))
    assert caught.value.code == "RUN_NOT_FOUND"
    with pytest.raises(RunNotFound):
        await engine.start("ghost")
    assert await engine.get_run("ghost") is None
    assert await store.get_run_metadata_by_run_id("ghost") is None


async def test_conflicts_are_retried_then_reraised(engine_store_factory: StoreFactory) -> None:
    inner = await engine_store_factory()

    class NoisyStore(WrappedStore):
        interferences = 0

        async def append_and_enqueue_tx(
            self, run_id: str, events: Sequence[RunEventInput], *, expected_seq: int | None = None
        ) -> AppendResult:
            if self.interferences:
                # Another process slips an event in between our read and our write.
                self.interferences -= 1
                await self.inner.append_and_enqueue_tx(run_id, [RunEventInput(type="Noise")])
            return await super().append_and_enqueue_tx(run_id, events, expected_seq=expected_seq)

    store = NoisyStore(inner)
    engine = make_engine(store, max_conflict_retries=3)
    run_id = (await engine.create_run(new_metadata())).run_id
    store.interferences = 3
    state = await engine.start(run_id)
    assert state.status is RunStatus.RUNNING
    assert state.unknown_event_count == 3
    await assert_consistent(inner, state)
    store.interferences = 4
    with pytest.raises(ConcurrencyConflict):
        await engine.pause(run_id)
    events = await inner.list_events(run_id)
    assert "RunPaused" not in [e.type for e in events]
    fresh = await engine.get_run(run_id)
    assert fresh is not None
    assert fresh.status is RunStatus.RUNNING


async def test_record_stamps_builtin_versions_and_checks_custom_ones() -> None:
    registry = UpcasterRegistry()
    registry.register("Shipment", 1, lambda payload, metadata: {**payload, "v": 2})
    store = await open_store("memory://")
    engine = RunEngine(store, upcasters=registry)
    run_id = (await engine.create_run(new_metadata(), mode="sync")).run_id
    await engine.record(run_id, RunEventInput(type="StepStarted", payload={"step": "pack"}))
    with pytest.raises(InvalidInput, match="schema version 2"):
        await engine.record(run_id, RunEventInput(type="Shipment"))
    state = await engine.record(run_id, RunEventInput(type="Shipment", schema_version=2))
    events = await store.list_events(run_id)
    assert [(e.type, e.schema_version) for e in events] == [
        ("RunQueued", 2),
        ("RunStarted", 1),
        ("StepStarted", 2),
        ("Shipment", 2),
    ]
    assert state.current_step == "pack"


async def test_cache_sees_writes_from_other_engines(engine_store_factory: StoreFactory) -> None:
    store = await engine_store_factory()
    cached, other = make_engine(store), make_engine(await engine_store_factory())
    run_id = (await cached.create_run(new_metadata())).run_id
    await other.start(run_id)
    await other.record(run_id, RunEventInput(type="StepStarted", payload={"step": "x"}))
    state = await cached.succeed(run_id, output="ok")
    assert (state.status, state.steps_started) == (RunStatus.SUCCEEDED, 1)
    await assert_consistent(store, state)


# -- randomized: concurrent commands never leave the table ----------------------------------------

COMMANDS = ["start", "pause", "resume", "retry", "cancel", "succeed", "fail", "time_out", "step"]


async def _run_commands(
    batches: list[list[tuple[int, str, bool]]],
    pauses: tuple[list[int], list[int]],
    write_pause: int,
) -> int:
    name = f"hyp-{uuid.uuid4().hex}"
    stores = [
        YieldingStore(await open_store(f"memory://{name}"), pauses=p, write_pause=write_pause)
        for p in pauses
    ]
    engines = [RunEngine(stores[0]), RunEngine(stores[1], cache_size=0)]
    metadata = new_metadata()
    returned: list[RunState] = [await engines[0].create_run(metadata)]

    async def apply(engine_index: int, command: str, keyed: bool) -> RunState:
        engine = engines[engine_index]
        key = f"{command}-key" if keyed else None
        if command == "step":
            event = RunEventInput(type="StepStarted", payload={"step": "s"})
            return await engine.record(metadata.run_id, event)
        method: Callable[..., Awaitable[RunState]] = getattr(engine, command)
        return await method(metadata.run_id, idempotency_key=key)

    for batch in batches:
        outcomes = await asyncio.gather(*(apply(*call) for call in batch), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                assert isinstance(outcome, InvalidTransition), repr(outcome)
            else:
                returned.append(outcome)
        stored = await stores[0].get_run_metadata_by_run_id(metadata.run_id)
        assert stored is not None
        events = await stores[0].list_events(metadata.run_id)
        current = project(stored, events)
        # Every stored event was legal where it landed, and every answer was the truth then.
        assert current.anomalies == ()
        assert current.status in RunStatus
        for state in returned:
            assert state == project(stored, events[: state.last_seq])
        latest = max(returned, key=lambda state: state.last_seq)
        assert latest == current
    for store in stores:
        await store.close()
    return sum(store.conflicts for store in stores)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(
        st.lists(
            st.tuples(st.integers(0, 1), st.sampled_from(COMMANDS), st.booleans()),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=6,
    ),
    pauses=st.tuples(*[st.lists(st.integers(0, 3), min_size=1, max_size=8)] * 2),
    write_pause=st.integers(0, 3),
)
def test_random_concurrent_commands_stay_in_the_table(
    batches: list[list[tuple[int, str, bool]]],
    pauses: tuple[list[int], list[int]],
    write_pause: int,
) -> None:
    asyncio.run(_run_commands(batches, pauses, write_pause))


def test_the_random_test_really_races() -> None:
    batch = [(0, "start", False), (1, "start", False), (0, "step", False), (1, "step", False)]
    conflicts = asyncio.run(_run_commands([batch, batch], ([0], [0]), 3))
    assert conflicts > 0
