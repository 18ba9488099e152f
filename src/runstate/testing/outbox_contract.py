"""The outbox interface: per-run claims under a lease, retries, dead letters, purge, wake-ups."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from ..errors import InvalidInput
from ..store import RunStateStore
from ._support import (
    ContractBase,
    as_outbox,
    bootstrap_input,
    drain_outbox,
    new_run_id,
)


class OutboxContract(ContractBase):
    """What ``OutboxStore`` promises the relay."""

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

    async def test_store_id_is_stable_and_shared_by_every_handle(
        self, store: RunStateStore, second_store: RunStateStore
    ) -> None:
        # The relay's default CloudEvents source: it must not change between calls, handles,
        # processes or restarts of one store.
        store_id = await as_outbox(store).store_id()
        assert type(store_id) is str
        assert store_id
        assert store_id.isprintable()
        assert " " not in store_id
        assert await as_outbox(store).store_id() == store_id
        assert await as_outbox(second_store).store_id() == store_id

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
