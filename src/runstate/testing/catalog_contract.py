"""The catalog interface: listing runs, and the commit-safe feed of every event."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from ..errors import InvalidInput
from ..store import RunStateStore
from ..types import RunEventInput
from ._support import (
    ContractBase,
    as_catalog,
    bootstrap_input,
    new_run_id,
)


class CatalogContract(ContractBase):
    """What ``RunCatalog`` promises operators and followers."""

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
