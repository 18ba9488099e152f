"""Run queries: the per-run summary (as the projector computes it), filters, keyset paging,
counts per status, and the dead letters."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ..engine.lifecycle import BUILTIN_EVENT_TYPES, RunStatus
from ..engine.projector import project
from ..errors import InvalidInput
from ..store import RunCatalog, RunStateStore
from ..types import RunEventInput, RunFilter, RunOrder, RunSummary
from ._support import ContractBase, as_catalog, as_outbox, bad, bootstrap_input, new_run_id

_TYPES = [*sorted(BUILTIN_EVENT_TYPES), "Annotated", "RunStarted", "RunStarted", "StepStarted"]
_BASE = datetime(2031, 5, 1, tzinfo=UTC)


async def _all_pages(
    catalog: RunCatalog, filter: RunFilter, order_by: RunOrder, descending: bool, limit: int
) -> list[RunSummary]:
    found: list[RunSummary] = []
    cursor: str | None = None
    while True:
        page = await catalog.query_runs(
            filter, order_by=order_by, descending=descending, limit=limit, cursor=cursor
        )
        assert len(page.runs) <= limit
        found.extend(page.runs)
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def _expected_key(summary: RunSummary, order_by: str) -> tuple[Any, str]:
    value: Any = {
        "created_at": summary.metadata.created_at,
        "updated_at": summary.updated_at,
        "workflow": summary.metadata.workflow,
        "status": summary.status,
    }[order_by]
    return (value, summary.metadata.run_id)


class QueryContract(ContractBase):
    """What ``query_runs``, ``count_runs_by_status`` and ``list_dead_letters`` promise."""

    async def _random_runs(self, store: RunStateStore, tenant: str, count: int, seed: int) -> None:
        rng = random.Random(seed)

        async def write(i: int) -> None:
            run_id = f"q{seed}-{i:03d}-{uuid.uuid4().hex[:8]}"
            first = ["RunQueued"] if rng.random() < 0.9 else [rng.choice(_TYPES)]
            await store.bootstrap_run_tx(
                bootstrap_input(
                    run_id,
                    *first,
                    workflow=rng.choice(["etl", "ml", "report"]),
                    tenant_id=tenant,
                    labels={"team": rng.choice(["a", "b"])},
                    created_at=_BASE + timedelta(seconds=rng.randrange(40)),
                )
            )
            for _ in range(rng.randrange(6)):
                batch = [
                    RunEventInput(
                        type=rng.choice(_TYPES),
                        occurred_at=(
                            _BASE + timedelta(minutes=rng.randrange(100))
                            if rng.random() < 0.5
                            else None
                        ),
                    )
                    for _ in range(rng.randrange(1, 4))
                ]
                await store.append_and_enqueue_tx(run_id, batch)

        # Concurrent writers, so stores that batch writes fold several runs at once.
        await asyncio.gather(*(write(i) for i in range(count)))

    async def test_summary_is_what_the_projector_computes(self, store: RunStateStore) -> None:
        catalog = as_catalog(store)
        tenant = f"tenant-{uuid.uuid4().hex}"
        await self._random_runs(store, tenant, 40, seed=17)
        page = await catalog.query_runs(RunFilter(tenant_id=tenant), limit=1000)
        assert len(page.runs) == 40
        assert page.next_cursor is None
        for summary in page.runs:
            run_id = summary.metadata.run_id
            metadata = await store.get_run_metadata_by_run_id(run_id)
            assert metadata is not None
            assert summary.metadata == metadata
            state = project(metadata, await store.list_events(run_id))
            got = (summary.status, summary.attempt, summary.last_seq, summary.updated_at)
            assert got == (state.status, state.attempt, state.last_seq, state.updated_at)
            assert (summary.started_at, summary.finished_at) == (
                state.started_at,
                state.finished_at,
            ), run_id
        listed = await catalog.list_runs(tenant_id=tenant, limit=1000)
        assert sorted(listed, key=lambda s: s.metadata.run_id) == sorted(
            page.runs, key=lambda s: s.metadata.run_id
        )

    async def test_lifecycle_fields_of_a_run(self, store: RunStateStore) -> None:
        catalog = as_catalog(store)
        run_id = new_run_id("life")
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        started = _BASE + timedelta(hours=1)
        finished = _BASE + timedelta(hours=2)
        await store.append_and_enqueue_tx(
            run_id,
            [
                RunEventInput(type="RunStarted", occurred_at=started),
                RunEventInput(type="RunRetryScheduled"),
            ],
        )
        (queued,) = (await catalog.query_runs(RunFilter(run_id_prefix=run_id))).runs
        assert (queued.status, queued.attempt, queued.started_at) == ("QUEUED", 2, started)
        assert (queued.finished_at, queued.last_seq) == (None, 3)
        await store.append_and_enqueue_tx(run_id, [RunEventInput(type="RunStarted")])
        await store.append_and_enqueue_tx(
            run_id,
            [
                RunEventInput(type="StepStarted", payload={"step": "a"}),
                RunEventInput(type="RunSucceeded", occurred_at=finished),
                RunEventInput(type="RunFailed"),  # illegal after success: no effect
                RunEventInput(type="Note"),
            ],
        )
        (done,) = (await catalog.query_runs(RunFilter(run_id_prefix=run_id))).runs
        assert (done.status, done.attempt, done.last_seq) == ("SUCCEEDED", 2, 8)
        assert (done.started_at, done.finished_at) == (started, finished)
        events = await store.list_events(run_id)
        assert done.updated_at == events[-1].recorded_at

    @pytest.mark.parametrize("order_by", ["created_at", "updated_at", "workflow", "status"])
    async def test_filters_and_keyset_pages(self, store: RunStateStore, order_by: RunOrder) -> None:
        catalog = as_catalog(store)
        tenant = f"tenant-{uuid.uuid4().hex}"
        await self._random_runs(store, tenant, 30, seed=5)
        everything = (await catalog.query_runs(RunFilter(tenant_id=tenant), limit=1000)).runs
        filters = [
            RunFilter(tenant_id=tenant),
            RunFilter(tenant_id=tenant, statuses=frozenset({"QUEUED", "RUNNING"})),
            RunFilter(tenant_id=tenant, exclude_statuses=frozenset({"QUEUED"})),
            RunFilter(tenant_id=tenant, workflow="etl", labels={"team": "a"}),
            RunFilter(
                tenant_id=tenant,
                created_after=_BASE + timedelta(seconds=10),
                created_before=_BASE + timedelta(seconds=30),
            ),
            RunFilter(tenant_id=tenant, run_id_prefix="q5-01"),
        ]
        for run_filter in filters:
            wanted = [s for s in everything if _passes(s, run_filter)]
            for descending in (True, False):
                got = await _all_pages(catalog, run_filter, order_by, descending, limit=7)
                expected = sorted(
                    wanted, key=lambda s: _expected_key(s, order_by), reverse=descending
                )
                assert [s.metadata.run_id for s in got] == [s.metadata.run_id for s in expected], (
                    run_filter,
                    descending,
                )
        assert len([s for s in everything if _passes(s, filters[3])]) > 0

    async def test_cursors_are_bound_to_their_filter_and_order(self, store: RunStateStore) -> None:
        catalog = as_catalog(store)
        tenant = f"tenant-{uuid.uuid4().hex}"
        for i in range(3):
            await store.bootstrap_run_tx(bootstrap_input(new_run_id(f"cur{i}"), tenant_id=tenant))
        run_filter = RunFilter(tenant_id=tenant)
        page = await catalog.query_runs(run_filter, limit=1)
        assert page.next_cursor is not None
        misuses: list[dict[str, Any]] = [
            {"filter": RunFilter(tenant_id=tenant, workflow="other")},
            {"filter": run_filter, "order_by": "updated_at"},
            {"filter": run_filter, "descending": False},
        ]
        for misuse in misuses:
            with pytest.raises(InvalidInput) as info:
                await catalog.query_runs(cursor=page.next_cursor, **misuse)
            assert info.value.field == "cursor"
        for garbage in ("", "not-a-cursor", "W10", page.next_cursor[:-3]):
            with pytest.raises(InvalidInput) as info:
                await catalog.query_runs(run_filter, cursor=garbage)
            assert info.value.field == "cursor"
        # A different limit is the same query: the cursor still works.
        rest = await catalog.query_runs(run_filter, limit=10, cursor=page.next_cursor)
        assert (len(rest.runs), rest.next_cursor) == (2, None)

    async def test_bad_query_arguments_are_refused(self, store: RunStateStore) -> None:
        catalog = as_catalog(store)
        naive = datetime(2030, 1, 1)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"filter": RunFilter(statuses=frozenset({"DONE"}))}, "filter.statuses"),
            ({"filter": RunFilter(exclude_statuses=bad({"x"}))}, "filter.exclude_statuses"),
            ({"filter": RunFilter(statuses=bad("QUEUED"))}, "filter.statuses"),
            ({"filter": RunFilter(workflow="")}, "filter.workflow"),
            ({"filter": RunFilter(tenant_id=bad(3))}, "filter.tenant_id"),
            ({"filter": RunFilter(labels=bad({"k": 1}))}, "filter.labels"),
            ({"filter": RunFilter(created_after=naive)}, "filter.created_after"),
            ({"filter": RunFilter(created_before=naive)}, "filter.created_before"),
            ({"filter": RunFilter(run_id_prefix="a\x00")}, "filter.run_id_prefix"),
            ({"filter": bad({"status": "QUEUED"})}, "filter"),
            ({"order_by": "run_id"}, "order_by"),
            ({"descending": bad(1)}, "descending"),
            ({"limit": 0}, "limit"),
            ({"limit": 1001}, "limit"),
            ({"limit": bad(1.5)}, "limit"),
        ]
        for kwargs, field in cases:
            with pytest.raises(InvalidInput) as info:
                await catalog.query_runs(**kwargs)
            assert info.value.field == field, kwargs
        with pytest.raises(InvalidInput) as info:
            await catalog.count_runs_by_status(RunFilter(statuses=frozenset({"DONE"})))
        assert info.value.field == "filter.statuses"
        outbox = as_outbox(store)
        dead_cases: list[tuple[dict[str, Any], str]] = [
            ({"limit": -1}, "limit"),
            ({"run_id": ""}, "run_id"),
            ({"after_outbox_id": -1}, "after_outbox_id"),
        ]
        for dead_kwargs, field in dead_cases:
            with pytest.raises(InvalidInput) as info:
                await outbox.list_dead_letters(**dead_kwargs)
            assert info.value.field == field

    async def test_counts_per_status(self, store: RunStateStore) -> None:
        catalog = as_catalog(store)
        tenant = f"tenant-{uuid.uuid4().hex}"
        await self._random_runs(store, tenant, 25, seed=9)
        everything = (await catalog.query_runs(RunFilter(tenant_id=tenant), limit=1000)).runs
        counts = await catalog.count_runs_by_status(
            RunFilter(tenant_id=tenant, statuses=frozenset({"RUNNING"}))
        )
        assert list(counts) == [status.value for status in RunStatus]
        for status in RunStatus:
            assert counts[status.value] == sum(1 for s in everything if s.status == status)
        excluded = await catalog.count_runs_by_status(
            RunFilter(tenant_id=tenant, exclude_statuses=frozenset({"QUEUED"}), workflow="ml")
        )
        assert excluded["QUEUED"] == 0
        assert sum(excluded.values()) == sum(
            1 for s in everything if s.status != "QUEUED" and s.metadata.workflow == "ml"
        )
        empty = await catalog.count_runs_by_status(RunFilter(tenant_id=f"none-{tenant}"))
        assert set(empty.values()) == {0}

    async def test_dead_letters_with_their_last_error(self, store: RunStateStore) -> None:
        outbox = as_outbox(store)
        run_ids = [new_run_id("dead"), new_run_id("dead")]
        for run_id in run_ids:
            await store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued", "RunStarted"))
        owner = f"owner-{uuid.uuid4().hex}"
        killed: list[int] = []
        for _ in range(50):
            batch = await outbox.claim_outbox_batch(owner=owner, limit=500, lease_seconds=30)
            mine = [r for r in batch if r.event.run_id in run_ids]
            others = [r.outbox_id for r in batch if r.event.run_id not in run_ids]
            await outbox.release_outbox(others, owner=owner)
            for record in mine:
                if record.event.seq == 1 and record.attempts == 0:
                    retry = datetime.now(UTC) - timedelta(seconds=1)
                    await outbox.mark_failed(
                        record.outbox_id, owner=owner, error="try again", retry_at=retry
                    )
                elif record.event.seq == 1:
                    await outbox.mark_failed(
                        record.outbox_id, owner=owner, error="gone for good", retry_at=None
                    )
                    killed.append(record.outbox_id)
                else:
                    await outbox.release_outbox([record.outbox_id], owner=owner)
            if len(killed) == 2:
                break
        assert len(killed) == 2
        before = datetime.now(UTC)
        letters = [d for d in await outbox.list_dead_letters() if d.event.run_id in run_ids]
        assert [d.outbox_id for d in letters] == sorted(killed)
        for letter in letters:
            assert (letter.attempts, letter.last_error) == (2, "gone for good")
            assert (letter.workflow, letter.event.type) == ("contract-wf", "RunQueued")
            assert letter.dead_at is not None
            assert letter.dead_at <= before
        one = await outbox.list_dead_letters(run_id=run_ids[1])
        assert [d.event.run_id for d in one] == [run_ids[1]]
        first = min(killed)
        later = await outbox.list_dead_letters(after_outbox_id=first, limit=1000)
        later_ids = [d.outbox_id for d in later]
        assert first not in later_ids
        assert max(killed) in later_ids
        assert await outbox.list_dead_letters(limit=0) == []
        assert await outbox.redrive_dead_letters(run_id=run_ids[0]) == 1
        assert await outbox.redrive_dead_letters(run_id=run_ids[1]) == 1
        remaining = await outbox.list_dead_letters(limit=1000)
        assert not [d for d in remaining if d.event.run_id in run_ids]


def _passes(summary: RunSummary, run_filter: RunFilter) -> bool:
    metadata = summary.metadata
    return (
        (not run_filter.statuses or summary.status in run_filter.statuses)
        and summary.status not in run_filter.exclude_statuses
        and (run_filter.workflow is None or metadata.workflow == run_filter.workflow)
        and (run_filter.tenant_id is None or metadata.tenant_id == run_filter.tenant_id)
        and all(metadata.labels.get(k) == v for k, v in run_filter.labels.items())
        and (run_filter.created_after is None or metadata.created_at >= run_filter.created_after)
        and (run_filter.created_before is None or metadata.created_at < run_filter.created_before)
        and (
            run_filter.run_id_prefix is None or metadata.run_id.startswith(run_filter.run_id_prefix)
        )
    )
