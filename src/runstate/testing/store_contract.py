"""The store's rules: atomic bootstrap, RUN_ALREADY_EXISTS, appends, gapless seqs, dedupe,
visibility, and paging."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ..errors import ConcurrencyConflict, InvalidInput, RunAlreadyExists, RunNotFound
from ..store import RunStateStore
from ..types import RunBootstrapInput, RunEventInput, RunEventPersisted, RunMetadata
from ._support import (
    ContractBase,
    as_outbox,
    bootstrap_input,
    drain_outbox,
    new_run_id,
)


class StoreContract(ContractBase):
    """Rules 1-6 and 8 of docs/design.md, "The store contract"."""

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
