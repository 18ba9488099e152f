"""The shared contract suite of CONTRACT section 3, run against every adapter.

Subclass ``RunStateStoreContract`` and implement ``make_store``. Each call must return a new,
open store object; stores made within one test must see the same data (the suite opens two
to test concurrency across connections). Tests use fresh random run ids, so the stores need not
be empty.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ..errors import ConcurrencyConflict, InvalidInput, RunAlreadyExists, RunNotFound
from ..store import OutboxStore, RunCatalog, RunStateStore
from ..types import RunBootstrapInput, RunEventInput, RunEventPersisted, RunMetadata


def _bad(value: Any) -> Any:
    """Pass a deliberately ill-typed value past the type checker."""
    return value


def new_run_id(prefix: str = "run") -> str:
    """Return a run id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex}"


def bootstrap_input(
    run_id: str, *event_types: str, workflow: str = "contract-wf", **metadata: Any
) -> RunBootstrapInput:
    """Build a bootstrap input with one event per type (default: ``RunQueued``)."""
    events = [RunEventInput(type=t) for t in (event_types or ("RunQueued",))]
    return RunBootstrapInput(
        metadata=RunMetadata(run_id=run_id, workflow=workflow, **metadata), first_events=events
    )


def as_catalog(store: RunStateStore) -> RunCatalog:
    """Return the store's catalog interface, failing the test if it has none."""
    assert isinstance(store, RunCatalog), f"{type(store).__name__} has no catalog interface"
    return store


def as_outbox(store: RunStateStore) -> OutboxStore:
    """Return the store's outbox interface, failing the test if it has none."""
    assert isinstance(store, OutboxStore), f"{type(store).__name__} has no outbox interface"
    return store


async def drain_outbox(store: RunStateStore, owner: str = "drain") -> list[tuple[str, int]]:
    """Claim and deliver every claimable record; return ``(run_id, seq)`` in claim order."""
    outbox = as_outbox(store)
    seen: list[tuple[str, int]] = []
    while True:
        batch = await outbox.claim_outbox_batch(owner=owner, limit=500, lease_seconds=30)
        if not batch:
            return seen
        seen.extend((r.event.run_id, r.event.seq) for r in batch)
        await outbox.mark_delivered([r.outbox_id for r in batch], owner=owner)


class RunStateStoreContract:
    """Every numbered rule of CONTRACT section 3, as tests. Subclass and set ``make_store``."""

    #: Examples for the model-based property test; lower it for slow adapters.
    hypothesis_max_examples = 40

    async def make_store(self) -> RunStateStore:
        """Return a new open store on the adapter under test."""
        raise NotImplementedError

    async def make_small_payload_store(self, max_payload_bytes: int) -> RunStateStore:
        """Return a store with a small payload limit; adapters override if options differ."""
        raise NotImplementedError

    @pytest.fixture
    async def store(self) -> AsyncIterator[RunStateStore]:
        """The store under test, closed after the test."""
        store = await self.make_store()
        try:
            yield store
        finally:
            await store.close()

    @pytest.fixture
    async def second_store(self) -> AsyncIterator[RunStateStore]:
        """Another store object on the same data, for concurrency across connections."""
        store = await self.make_store()
        try:
            yield store
        finally:
            await store.close()

    # -- rule 1: bootstrap is atomic -----------------------------------------------------

    async def test_bootstrap_stores_metadata_events_and_outbox(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
        metadata = RunMetadata(
            run_id=run_id,
            workflow="billing",
            workflow_version="v3",
            tenant_id="acme",
            parent_run_id="parent-1",
            input={"invoice": 42, "lines": [1.5, "two", None, True], "nested": {"a": {}}},
            labels={"team": "payments", "priority": "high"},
            created_at=created,
            schema_version=2,
        )
        occurred = datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)
        events = [
            RunEventInput(type="RunQueued", payload={"queue": "default"}, occurred_at=occurred),
            RunEventInput(type="RunStarted", payload={"worker": "w-1"}, schema_version=3),
        ]
        result = await store.bootstrap_run_tx(
            RunBootstrapInput(metadata=metadata, first_events=events)
        )
        assert result.run_id == run_id
        assert result.last_seq == 2
        assert result.deduplicated == ()
        assert [e.seq for e in result.appended] == [1, 2]
        assert result.appended[0].position < result.appended[1].position

        stored = await store.get_run_metadata_by_run_id(run_id)
        assert stored == metadata
        listed = await store.list_events(run_id)
        assert listed == list(result.appended)
        first, second = listed
        assert (first.type, first.payload, first.event_id) == (
            "RunQueued",
            {"queue": "default"},
            events[0].event_id,
        )
        assert first.occurred_at == occurred
        assert second.schema_version == 3
        assert second.occurred_at is None
        for event in listed:
            assert event.run_id == run_id
            assert event.recorded_at.utcoffset() == timedelta(0)
        delivered = await drain_outbox(store)
        assert [item for item in delivered if item[0] == run_id] == [(run_id, 1), (run_id, 2)]

    async def test_outbox_records_carry_event_and_workflow(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        result = await store.bootstrap_run_tx(bootstrap_input(run_id, workflow="etl"))
        outbox = as_outbox(store)
        records = [
            r
            for r in await outbox.claim_outbox_batch(owner="o", limit=10_000, lease_seconds=30)
            if r.event.run_id == run_id
        ]
        assert len(records) == 1
        assert records[0].event == result.appended[0]
        assert records[0].workflow == "etl"
        assert records[0].message_id == f"{run_id}:1"

    async def test_failed_bootstrap_writes_nothing(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        bad = RunBootstrapInput(
            metadata=RunMetadata(run_id=run_id, workflow="wf"),
            first_events=[RunEventInput(type="RunQueued"), RunEventInput(type="")],
        )
        with pytest.raises(InvalidInput):
            await store.bootstrap_run_tx(bad)
        assert await store.get_run_metadata_by_run_id(run_id) is None
        assert await store.list_events(run_id) == []
        assert run_id not in {r for r, _ in await drain_outbox(store)}

    async def test_timestamps_are_normalized_to_utc(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        plus_two = timezone(timedelta(hours=2))
        created = datetime(2026, 5, 1, 12, 0, tzinfo=plus_two)
        occurred = datetime(2026, 5, 1, 12, 30, tzinfo=plus_two)
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf", created_at=created),
                first_events=[RunEventInput(type="RunQueued", occurred_at=occurred)],
            )
        )
        metadata = await store.get_run_metadata_by_run_id(run_id)
        assert metadata is not None
        assert metadata.created_at == created
        assert metadata.created_at.utcoffset() == timedelta(0)
        (event,) = await store.list_events(run_id)
        assert event.occurred_at == occurred
        assert event.occurred_at is not None
        assert event.occurred_at.utcoffset() == timedelta(0)

    # -- rule 2: RUN_ALREADY_EXISTS ------------------------------------------------------

    async def test_second_bootstrap_raises_and_writes_nothing(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id, workflow="first"))
        with pytest.raises(RunAlreadyExists) as caught:
            await store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued", "RunStarted"))
        assert caught.value.code == "RUN_ALREADY_EXISTS"
        assert caught.value.run_id == run_id
        metadata = await store.get_run_metadata_by_run_id(run_id)
        assert metadata is not None
        assert metadata.workflow == "first"
        assert [e.type for e in await store.list_events(run_id)] == ["RunQueued"]
        assert [s for r, s in await drain_outbox(store) if r == run_id] == [1]

    async def test_already_exists_tells_whether_same_request(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        original = bootstrap_input(run_id, "RunQueued", input={"x": 1}, labels={"k": "v"})
        await store.bootstrap_run_tx(original)
        with pytest.raises(RunAlreadyExists) as retried:
            await store.bootstrap_run_tx(original)
        assert retried.value.same_request is True
        with pytest.raises(RunAlreadyExists) as other:
            await store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued", input={"x": 1}))
        assert other.value.same_request is False

    async def test_retry_of_a_bootstrap_with_duplicate_ids_is_the_same_request(
        self, store: RunStateStore
    ) -> None:
        run_id = new_run_id()
        request = RunBootstrapInput(
            metadata=RunMetadata(run_id=run_id, workflow="wf"),
            first_events=[
                RunEventInput(type="RunQueued", event_id="q"),
                RunEventInput(type="RunQueued", event_id="q"),
                RunEventInput(type="RunStarted", event_id="s"),
            ],
        )
        await store.bootstrap_run_tx(request)
        with pytest.raises(RunAlreadyExists) as retried:
            await store.bootstrap_run_tx(request)
        assert retried.value.same_request is True

    async def test_concurrent_bootstraps_have_exactly_one_winner(
        self, store: RunStateStore, second_store: RunStateStore
    ) -> None:
        run_id = new_run_id()
        stores = [store, second_store]
        attempts = [
            stores[i % 2].bootstrap_run_tx(bootstrap_input(run_id, workflow=f"wf-{i}"))
            for i in range(50)
        ]
        outcomes = await asyncio.gather(*attempts, return_exceptions=True)
        winners = [o for o in outcomes if not isinstance(o, BaseException)]
        losers = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(winners) == 1
        assert len(losers) == 49
        for loser in losers:
            assert isinstance(loser, RunAlreadyExists), repr(loser)
        events = await store.list_events(run_id)
        assert len(events) == 1
        metadata = await store.get_run_metadata_by_run_id(run_id)
        assert metadata is not None
        assert f"wf-{outcomes.index(winners[0])}" == metadata.workflow

    # -- rule 3: append never creates, expected_seq ----------------------------------------

    async def test_append_to_unknown_run_raises(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        with pytest.raises(RunNotFound) as caught:
            await store.append_and_enqueue_tx(run_id, [RunEventInput(type="StepStarted")])
        assert caught.value.code == "RUN_NOT_FOUND"
        assert caught.value.run_id == run_id
        assert await store.get_run_metadata_by_run_id(run_id) is None
        assert await store.list_events(run_id) == []

    async def test_expected_seq_conflict_writes_nothing(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued", "RunStarted"))
        for wrong in (0, 1, 3):
            with pytest.raises(ConcurrencyConflict) as caught:
                await store.append_and_enqueue_tx(
                    run_id, [RunEventInput(type="StepStarted")], expected_seq=wrong
                )
            assert caught.value.code == "CONCURRENCY_CONFLICT"
            assert (caught.value.expected_seq, caught.value.actual_seq) == (wrong, 2)
        assert len(await store.list_events(run_id)) == 2
        assert [s for r, s in await drain_outbox(store) if r == run_id] == [1, 2]
        # The refused calls left the run's head where it was: the next append follows on.
        after = await store.append_and_enqueue_tx(run_id, [RunEventInput(type="A")], expected_seq=2)
        assert [e.seq for e in after.appended] == [3]

    async def test_expected_seq_match_appends(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        result = await store.append_and_enqueue_tx(
            run_id, [RunEventInput(type="A"), RunEventInput(type="B")], expected_seq=1
        )
        assert [e.seq for e in result.appended] == [2, 3]
        assert result.last_seq == 3
        again = await store.append_and_enqueue_tx(run_id, [RunEventInput(type="C")], expected_seq=3)
        assert again.last_seq == 4

    async def test_concurrent_expected_seq_appends_one_wins(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        outcomes = await asyncio.gather(
            *(
                store.append_and_enqueue_tx(run_id, [RunEventInput(type="X")], expected_seq=1)
                for _ in range(10)
            ),
            return_exceptions=True,
        )
        conflicts = [o for o in outcomes if isinstance(o, ConcurrencyConflict)]
        assert len(conflicts) == 9, outcomes
        assert len(await store.list_events(run_id)) == 2

    # -- rule 4: gapless seqs under concurrency ---------------------------------------------

    async def test_concurrent_appends_get_gapless_seqs(
        self, store: RunStateStore, second_store: RunStateStore
    ) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        stores = [store, second_store]

        async def writer(index: int) -> list[int]:
            seqs: list[int] = []
            for step in range(5):
                result = await stores[index % 2].append_and_enqueue_tx(
                    run_id, [RunEventInput(type="Step", payload={"w": index, "n": step})]
                )
                seqs.extend(e.seq for e in result.appended)
            return seqs

        results = await asyncio.gather(*(writer(i) for i in range(20)))
        all_seqs = sorted(s for seqs in results for s in seqs)
        assert all_seqs == list(range(2, 102))
        events = await store.list_events(run_id)
        assert [e.seq for e in events] == list(range(1, 102))
        positions = [e.position for e in events]
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)
        for index in range(20):
            mine = [e.payload["n"] for e in events if e.payload.get("w") == index]
            assert mine == [0, 1, 2, 3, 4]

    async def test_batch_append_is_contiguous(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        batches = [[RunEventInput(type=f"B{i}") for _ in range(4)] for i in range(8)]
        results = await asyncio.gather(
            *(store.append_and_enqueue_tx(run_id, batch) for batch in batches)
        )
        for result in results:
            seqs = [e.seq for e in result.appended]
            assert seqs == list(range(seqs[0], seqs[0] + 4))
            assert result.last_seq >= seqs[-1]

    # -- rule 5: dedupe by event_id ---------------------------------------------------------

    async def test_dedupe_within_one_call(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        first = RunEventInput(type="RunQueued", event_id="e-1")
        twin = RunEventInput(type="RunQueued", event_id="e-1", payload={"other": True})
        result = await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf"), first_events=[first, twin]
            )
        )
        assert [e.event_id for e in result.appended] == ["e-1"]
        assert result.deduplicated == ("e-1",)
        assert result.last_seq == 1
        (stored,) = await store.list_events(run_id)
        assert stored.payload == {}
        assert [s for r, s in await drain_outbox(store) if r == run_id] == [1]

    async def test_dedupe_across_calls(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf"),
                first_events=[RunEventInput(type="RunQueued", event_id="q")],
            )
        )
        result = await store.append_and_enqueue_tx(
            run_id,
            [
                RunEventInput(type="RunQueued", event_id="q"),
                RunEventInput(type="StepStarted", event_id="s1"),
                RunEventInput(type="StepStarted", event_id="s1"),
            ],
        )
        assert [e.event_id for e in result.appended] == ["s1"]
        assert result.deduplicated == ("q", "s1")
        assert result.last_seq == 2
        repeat = await store.append_and_enqueue_tx(
            run_id, [RunEventInput(type="StepStarted", event_id="s1")]
        )
        assert repeat.appended == ()
        assert repeat.deduplicated == ("s1",)
        assert repeat.last_seq == 2
        assert [s for r, s in await drain_outbox(store) if r == run_id] == [1, 2]
        # Duplicates claim no seq: the next new event is 3, and expected_seq=2 holds.
        after = await store.append_and_enqueue_tx(
            run_id,
            [RunEventInput(type="X", event_id="s1"), RunEventInput(type="Y", event_id="s2")],
            expected_seq=2,
        )
        assert [(e.event_id, e.seq) for e in after.appended] == [("s2", 3)]
        assert after.last_seq == 3

    async def test_same_event_id_in_two_runs_is_independent(self, store: RunStateStore) -> None:
        run_a, run_b = new_run_id(), new_run_id()
        for run_id in (run_a, run_b):
            result = await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_id, workflow="wf"),
                    first_events=[RunEventInput(type="RunQueued", event_id="shared")],
                )
            )
            assert len(result.appended) == 1

    async def test_all_duplicates_with_expected_seq(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf"),
                first_events=[RunEventInput(type="RunQueued", event_id="q")],
            )
        )
        result = await store.append_and_enqueue_tx(
            run_id, [RunEventInput(type="RunQueued", event_id="q")], expected_seq=1
        )
        assert (result.appended, result.deduplicated, result.last_seq) == ((), ("q",), 1)

    # -- rule 6: visibility -----------------------------------------------------------------

    async def test_reader_never_sees_events_before_metadata(
        self, store: RunStateStore, second_store: RunStateStore
    ) -> None:
        run_ids = [new_run_id() for _ in range(30)]
        violations: list[str] = []
        done = asyncio.Event()

        async def reader() -> int:
            checks = 0
            while not done.is_set():
                for run_id in run_ids:
                    events = await second_store.list_events(run_id)
                    if events:
                        checks += 1
                        if await second_store.get_run_metadata_by_run_id(run_id) is None:
                            violations.append(run_id)
                await asyncio.sleep(0)
            return checks

        async def writer() -> None:
            try:
                for run_id in run_ids:
                    await store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued", "RunStarted"))
                    await asyncio.sleep(0)
            finally:
                done.set()

        _checks, _ = await asyncio.gather(reader(), writer())
        assert violations == []
        for run_id in run_ids:
            assert len(await second_store.list_events(run_id)) == 2

    async def test_every_event_has_exactly_one_outbox_record(self, store: RunStateStore) -> None:
        run_ids = [new_run_id() for _ in range(10)]
        await asyncio.gather(*(store.bootstrap_run_tx(bootstrap_input(r)) for r in run_ids))
        await asyncio.gather(
            *(
                store.append_and_enqueue_tx(
                    r, [RunEventInput(type="A"), RunEventInput(type="B", event_id="dup")]
                )
                for r in run_ids
            )
        )
        await asyncio.gather(
            *(
                store.append_and_enqueue_tx(r, [RunEventInput(type="B", event_id="dup")])
                for r in run_ids
            )
        )
        delivered = [item for item in await drain_outbox(store) if item[0] in set(run_ids)]
        assert len(delivered) == len(set(delivered))
        stored = {(r, e.seq) for r in run_ids for e in await store.list_events(r)}
        assert set(delivered) == stored
        assert len(stored) == 30

    # -- rule 7: bad input -------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("label", "metadata_changes", "event"),
        [
            ("empty run_id", {"run_id": ""}, None),
            ("long run_id", {"run_id": "r" * 256}, None),
            ("control char in run_id", {"run_id": "run\n1"}, None),
            ("non-str run_id", {"run_id": 12}, None),
            ("empty workflow", {"workflow": ""}, None),
            ("naive created_at", {"created_at": datetime(2026, 1, 1)}, None),
            ("input with NaN", {"input": {"x": float("nan")}}, None),
            ("labels not str", {"labels": {"k": 1}}, None),
            ("empty type", {}, RunEventInput(type="")),
            ("long type", {}, RunEventInput(type="T" * 256)),
            ("control char in event_id", {}, RunEventInput(type="T", event_id="a\x00b")),
            ("NaN", {}, RunEventInput(type="T", payload={"v": float("nan")})),
            ("Infinity", {}, RunEventInput(type="T", payload={"v": float("inf")})),
            ("bytes", {}, RunEventInput(type="T", payload=_bad({"v": b"raw"}))),
            ("object", {}, RunEventInput(type="T", payload=_bad({"v": object()}))),
            ("set", {}, RunEventInput(type="T", payload=_bad({"v": {1, 2}}))),
            ("tuple", {}, RunEventInput(type="T", payload=_bad({"v": (1, 2)}))),
            ("int key", {}, RunEventInput(type="T", payload=_bad({"v": {1: "one"}}))),
            ("payload list", {}, RunEventInput(type="T", payload=[1])),  # type: ignore[arg-type]
            ("NUL in string", {}, RunEventInput(type="T", payload={"v": "a\x00"})),
            ("lone surrogate", {}, RunEventInput(type="T", payload={"v": "\ud800"})),
            ("schema_version 0", {}, RunEventInput(type="T", schema_version=0)),
            ("naive occurred_at", {}, RunEventInput(type="T", occurred_at=datetime(2026, 1, 1))),
        ],
    )
    async def test_bad_bootstrap_input_writes_nothing(
        self,
        store: RunStateStore,
        label: str,
        metadata_changes: dict[str, Any],
        event: RunEventInput | None,
    ) -> None:
        run_id = new_run_id()
        fields: dict[str, Any] = {"run_id": run_id, "workflow": "wf", **metadata_changes}
        metadata = RunMetadata(**fields)
        events = [RunEventInput(type="RunQueued")] + ([event] if event else [])
        with pytest.raises(InvalidInput) as caught:
            await store.bootstrap_run_tx(RunBootstrapInput(metadata=metadata, first_events=events))
        assert caught.value.code == "INVALID_INPUT"
        assert str(caught.value)
        for candidate in {run_id, str(fields["run_id"])}:
            if candidate and len(candidate) <= 255 and "\n" not in candidate:
                assert await store.get_run_metadata_by_run_id(candidate) is None

    async def test_bootstrap_without_events_is_refused(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        with pytest.raises(InvalidInput):
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_id, workflow="wf"), first_events=[]
                )
            )
        assert await store.get_run_metadata_by_run_id(run_id) is None

    async def test_bad_append_writes_nothing(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        bad_batches: list[Any] = [
            [RunEventInput(type="ok"), RunEventInput(type="bad", payload={"v": float("inf")})],
            [RunEventInput(type="ok"), RunEventInput(type="\x07")],
            "not a list",
            [{"type": "dict-not-event"}],
        ]
        for batch in bad_batches:
            with pytest.raises(InvalidInput):
                await store.append_and_enqueue_tx(run_id, batch)
        with pytest.raises(InvalidInput):
            await store.append_and_enqueue_tx(run_id, [RunEventInput(type="ok")], expected_seq=-1)
        with pytest.raises(InvalidInput):
            await store.append_and_enqueue_tx("", [RunEventInput(type="ok")])
        assert len(await store.list_events(run_id)) == 1
        assert [s for r, s in await drain_outbox(store) if r == run_id] == [1]

    async def test_payload_over_the_default_limit_is_refused(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        big = {"blob": "x" * (1024 * 1024)}
        with pytest.raises(InvalidInput, match="limit"):
            await store.append_and_enqueue_tx(run_id, [RunEventInput(type="Big", payload=big)])
        near = {"blob": "x" * (1024 * 1024 - 100)}
        result = await store.append_and_enqueue_tx(
            run_id, [RunEventInput(type="Big", payload=near)]
        )
        assert result.last_seq == 2
        (event,) = await store.list_events(run_id, after_seq=1)
        assert event.payload == near

    async def test_payload_limit_is_configurable(self) -> None:
        store = await self.make_small_payload_store(100)
        try:
            run_id = new_run_id()
            await store.bootstrap_run_tx(bootstrap_input(run_id))
            with pytest.raises(InvalidInput, match="100"):
                await store.append_and_enqueue_tx(
                    run_id, [RunEventInput(type="T", payload={"v": "y" * 200})]
                )
            await store.append_and_enqueue_tx(run_id, [RunEventInput(type="T", payload={"v": 1})])
            assert len(await store.list_events(run_id)) == 2
        finally:
            await store.close()

    async def test_payload_round_trips_exactly(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        payload: dict[str, Any] = {
            "unicode": "héllo wörld ✓ 𝄞 \u2028 \t\n\"quoted\" 'single' \\ back",
            "sql": "'; DROP TABLE run_events; --",
            "big_int": 2**70,
            "neg": -12345678901234567890,
            "float": 0.1,
            "tiny": 5e-324,
            "huge": 1.7976931348623157e308,
            "bools": [True, False, None],
            "empty": {"list": [], "dict": {}, "str": ""},
            "deep": {"a": {"b": {"c": {"d": [[[["x"]]]]}}}},
            "": "empty key",
        }
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf", input=payload),
                first_events=[RunEventInput(type="RunQueued", payload=payload)],
            )
        )
        (event,) = await store.list_events(run_id)
        assert event.payload == payload
        assert repr(event.payload) == repr(payload)
        metadata = await store.get_run_metadata_by_run_id(run_id)
        assert metadata is not None
        assert metadata.input == payload

    async def test_stored_payload_is_isolated_from_caller(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        payload: dict[str, Any] = {"items": [1, 2]}
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf"),
                first_events=[RunEventInput(type="RunQueued", payload=payload)],
            )
        )
        payload["items"].append(3)
        (event,) = await store.list_events(run_id)
        assert event.payload == {"items": [1, 2]}

    # -- rule 8: ordering and paging -----------------------------------------------------------

    async def test_list_events_pages_in_seq_order(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        for start in range(0, 60, 10):
            await store.append_and_enqueue_tx(
                run_id, [RunEventInput(type="Step", payload={"i": start + i}) for i in range(10)]
            )
        everything = await store.list_events(run_id)
        assert [e.seq for e in everything] == list(range(1, 62))
        pages: list[RunEventPersisted] = []
        after = 0
        while True:
            page = await store.list_events(run_id, after_seq=after, limit=7)
            if not page:
                break
            assert len(page) <= 7
            pages.extend(page)
            after = page[-1].seq
        assert pages == everything
        assert await store.list_events(run_id, after_seq=61) == []
        assert await store.list_events(run_id, after_seq=5, limit=0) == []
        assert [e.seq for e in await store.list_events(run_id, after_seq=59)] == [60, 61]

    async def test_unknown_run_reads_empty(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        assert await store.list_events(run_id) == []
        assert await store.get_run_metadata_by_run_id(run_id) is None

    async def test_bad_paging_arguments_are_refused(self, store: RunStateStore) -> None:
        with pytest.raises(InvalidInput):
            await store.list_events("r", after_seq=-1)
        with pytest.raises(InvalidInput):
            await store.list_events("r", limit=-5)
        with pytest.raises(InvalidInput):
            await store.list_events("", limit=5)

    # -- the outbox interface ----------------------------------------------------------------

    async def test_outbox_claims_in_per_run_order_across_owners(self, store: RunStateStore) -> None:
        outbox = as_outbox(store)
        await drain_outbox(store)
        run_a, run_b = new_run_id(), new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_a, "A1", "A2", "A3"))
        await store.bootstrap_run_tx(bootstrap_input(run_b, "B1"))
        first = await outbox.claim_outbox_batch(owner="one", limit=2, lease_seconds=30)
        assert [(r.event.run_id, r.event.seq) for r in first] == [(run_a, 1), (run_a, 2)]
        # A3 waits behind the leased A1/A2; the other owner gets run B only.
        second = await outbox.claim_outbox_batch(owner="two", limit=10, lease_seconds=30)
        assert [(r.event.run_id, r.event.seq) for r in second] == [(run_b, 1)]
        assert await outbox.mark_delivered([first[0].outbox_id], owner="two") == 0
        assert await outbox.mark_delivered([r.outbox_id for r in first], owner="one") == 2
        third = await outbox.claim_outbox_batch(owner="two", limit=10, lease_seconds=30)
        assert [(r.event.run_id, r.event.seq) for r in third] == [(run_a, 3)]

    async def test_outbox_failure_retry_dead_letter_and_redrive(self, store: RunStateStore) -> None:
        outbox = as_outbox(store)
        await drain_outbox(store)
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id, "E1", "E2"))
        records = await outbox.claim_outbox_batch(owner="r", limit=10, lease_seconds=30)
        assert [r.event.seq for r in records] == [1, 2]
        assert [r.attempts for r in records] == [0, 0]
        await outbox.release_outbox([records[1].outbox_id], owner="r")
        # A failure reported by someone else's lease changes nothing.
        await outbox.mark_failed(records[0].outbox_id, owner="intruder", error="x", retry_at=None)
        assert (await outbox.outbox_stats()).in_flight >= 1
        soon = datetime.now(UTC) + timedelta(seconds=0.3)
        await outbox.mark_failed(records[0].outbox_id, owner="r", error="boom", retry_at=soon)
        # Not due yet, and seq 2 waits behind seq 1.
        assert await outbox.claim_outbox_batch(owner="r", limit=10, lease_seconds=30) == []
        await asyncio.sleep(0.4)
        retry = await outbox.claim_outbox_batch(owner="r", limit=10, lease_seconds=30)
        assert [(r.event.seq, r.attempts) for r in retry] == [(1, 1), (2, 0)]
        await outbox.release_outbox([retry[1].outbox_id], owner="r")
        await outbox.mark_failed(retry[0].outbox_id, owner="r", error="fatal", retry_at=None)
        # Dead-lettered: kept, visible, and its run's later records wait behind it.
        assert await outbox.claim_outbox_batch(owner="r", limit=10, lease_seconds=30) == []
        stats = await outbox.outbox_stats()
        assert stats.dead >= 1
        assert await outbox.redrive_dead_letters(run_id=run_id) == 1
        assert await outbox.redrive_dead_letters(run_id=run_id) == 0
        final = await outbox.claim_outbox_batch(owner="r", limit=10, lease_seconds=30)
        assert [(r.event.seq, r.outbox_id) for r in final] == [
            (1, records[0].outbox_id),
            (2, records[1].outbox_id),
        ]

    async def test_purge_deletes_old_deliveries_only(self, store: RunStateStore) -> None:
        outbox = as_outbox(store)
        await drain_outbox(store)
        delivered_before = (await outbox.outbox_stats()).delivered
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id, "E1", "E2", "E3"))
        records = await outbox.claim_outbox_batch(owner="r", limit=10, lease_seconds=30)
        mine = [r for r in records if r.event.run_id == run_id]
        await outbox.mark_delivered([mine[0].outbox_id, mine[1].outbox_id], owner="r")
        await outbox.release_outbox([r.outbox_id for r in records], owner="r")
        assert (await outbox.outbox_stats()).delivered == delivered_before + 2
        past = datetime.now(UTC) - timedelta(hours=1)
        assert await outbox.purge_delivered(older_than=past) == 0
        future = datetime.now(UTC) + timedelta(seconds=5)
        total = delivered_before + 2
        assert await outbox.purge_delivered(older_than=future, limit=1) == 1
        assert await outbox.purge_delivered(older_than=future, limit=10_000) == total - 1
        assert await outbox.purge_delivered(older_than=future) == 0
        stats = await outbox.outbox_stats()
        assert stats.delivered == 0
        # The undelivered record is untouched and still claimable, and the events stay.
        (left,) = [
            r
            for r in await outbox.claim_outbox_batch(owner="r", limit=10, lease_seconds=30)
            if r.event.run_id == run_id
        ]
        assert left.event.seq == 3
        assert len(await store.list_events(run_id)) == 3
        with pytest.raises(InvalidInput):
            await outbox.purge_delivered(older_than=future, limit=0)

    async def test_expired_lease_is_claimed_again_with_same_message_id(
        self, store: RunStateStore
    ) -> None:
        outbox = as_outbox(store)
        await drain_outbox(store)
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        (crashed,) = await outbox.claim_outbox_batch(owner="dead", limit=10, lease_seconds=0.05)
        assert await outbox.claim_outbox_batch(owner="next", limit=10, lease_seconds=30) == []
        await asyncio.sleep(0.2)
        (again,) = await outbox.claim_outbox_batch(owner="next", limit=10, lease_seconds=30)
        assert again.message_id == crashed.message_id
        assert again.outbox_id == crashed.outbox_id
        assert await outbox.mark_delivered([crashed.outbox_id], owner="dead") == 0
        assert await outbox.mark_delivered([again.outbox_id], owner="next") == 1
        stats = await outbox.outbox_stats()
        assert stats.delivered >= 1

    async def test_wait_for_outbox_wakes_on_write(self, store: RunStateStore) -> None:
        outbox = as_outbox(store)
        run_id = new_run_id()
        waiter = asyncio.create_task(outbox.wait_for_outbox(10.0))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        await asyncio.wait_for(waiter, 5.0)
        assert loop.time() - started < 5.0

    # -- the catalog: store-wide reads -------------------------------------------------------

    async def test_list_runs_newest_first_with_filters(self, store: RunStateStore) -> None:
        catalog = as_catalog(store)
        tenant = f"tenant-{uuid.uuid4().hex}"
        base = datetime(2030, 1, 1, tzinfo=UTC)
        run_ids = [new_run_id(f"cat{i}") for i in range(5)]
        for i, run_id in enumerate(run_ids):
            await store.bootstrap_run_tx(
                bootstrap_input(
                    run_id,
                    workflow="etl" if i % 2 == 0 else "ml",
                    tenant_id=tenant,
                    created_at=base + timedelta(minutes=i),
                )
            )
        await store.append_and_enqueue_tx(run_ids[0], [RunEventInput(type="RunStarted")])
        listed = await catalog.list_runs(tenant_id=tenant)
        assert [s.metadata.run_id for s in listed] == run_ids[::-1]
        assert listed[-1].last_seq == 2
        assert listed[0].last_seq == 1
        assert listed[0].updated_at.utcoffset() == timedelta(0)
        etl = await catalog.list_runs(tenant_id=tenant, workflow="etl")
        assert [s.metadata.run_id for s in etl] == [run_ids[4], run_ids[2], run_ids[0]]
        recent = await catalog.list_runs(
            tenant_id=tenant, created_after=base + timedelta(minutes=2)
        )
        assert [s.metadata.run_id for s in recent] == [run_ids[4], run_ids[3]]
        page = await catalog.list_runs(tenant_id=tenant, limit=2, offset=1)
        assert [s.metadata.run_id for s in page] == [run_ids[3], run_ids[2]]
        with pytest.raises(InvalidInput):
            await catalog.list_runs(limit=-1)

    async def test_read_feed_follows_the_whole_store(self, store: RunStateStore) -> None:
        catalog = as_catalog(store)
        cursor = await catalog.feed_head()
        assert (await catalog.read_feed(cursor=cursor)).events == ()
        run_a, run_b = new_run_id(), new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_a, "A1", "A2"))
        await store.bootstrap_run_tx(bootstrap_input(run_b, "B1"))
        await store.append_and_enqueue_tx(run_a, [RunEventInput(type="A3")])
        seen: list[tuple[str, int]] = []
        while True:
            page = await catalog.read_feed(cursor=cursor, limit=2)
            if not page.events:
                assert page.cursor == cursor
                break
            assert len(page.events) <= 2
            cursor = page.cursor
            seen.extend((e.run_id, e.seq) for e in page.events if e.run_id in {run_a, run_b})
        assert seen == [(run_a, 1), (run_a, 2), (run_b, 1), (run_a, 3)]
        head = await catalog.feed_head()
        assert (await catalog.read_feed(cursor=head)).events == ()
        await store.append_and_enqueue_tx(run_b, [RunEventInput(type="B2")])
        newer = [e for e in (await catalog.read_feed(cursor=head)).events if e.run_id == run_b]
        assert [e.seq for e in newer] == [2]
        from_start = await catalog.read_feed(limit=1_000_000)
        mine = [(e.run_id, e.seq) for e in from_start.events if e.run_id in {run_a, run_b}]
        assert sorted(mine) == sorted([*seen, (run_b, 2)])
        with pytest.raises(InvalidInput):
            await catalog.read_feed(cursor="not-a-cursor")

    async def test_feed_follower_misses_nothing_under_concurrent_writers(
        self, store: RunStateStore, second_store: RunStateStore
    ) -> None:
        catalog = as_catalog(store)
        cursor = await catalog.feed_head()
        run_ids = [new_run_id() for _ in range(8)]
        done = asyncio.Event()
        seen: list[tuple[str, int]] = []

        async def follow() -> None:
            nonlocal cursor
            # A feed may hold back committed events while older transactions are still open
            # (on PostgreSQL, anywhere on the server): an empty page is "not yet", not "done".
            deadline: float | None = None
            loop = asyncio.get_running_loop()
            while len(seen) < 48:
                if done.is_set() and deadline is None:
                    deadline = loop.time() + 10
                if deadline is not None and loop.time() > deadline:
                    return
                page = await catalog.read_feed(cursor=cursor, limit=7)
                cursor = page.cursor
                seen.extend((e.run_id, e.seq) for e in page.events if e.run_id in set(run_ids))
                await asyncio.sleep(0 if page.events else 0.01)
            await asyncio.sleep(0.05)
            extra = await catalog.read_feed(cursor=cursor)
            seen.extend((e.run_id, e.seq) for e in extra.events if e.run_id in set(run_ids))

        async def write(run_id: str, target: RunStateStore) -> None:
            await target.bootstrap_run_tx(bootstrap_input(run_id))
            for _ in range(5):
                await target.append_and_enqueue_tx(run_id, [RunEventInput(type="Step")])

        follower = asyncio.create_task(follow())
        await asyncio.gather(
            *(write(r, (store, second_store)[i % 2]) for i, r in enumerate(run_ids))
        )
        done.set()
        await follower
        assert len(seen) == len(set(seen)) == 48
        for run_id in run_ids:
            assert [s for r, s in seen if r == run_id] == [1, 2, 3, 4, 5, 6]

    # -- the model-based property test ---------------------------------------------------------

    def test_store_agrees_with_a_simple_model(self) -> None:
        from ._model import check_against_model

        check_against_model(self.make_store, self.hypothesis_max_examples)
