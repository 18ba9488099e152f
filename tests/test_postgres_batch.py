"""PostgreSQL group commit: concurrent writes share statements, each keeps its own outcome."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import asyncpg
import pytest

from conftest import lock_run_row
from runstate import (
    ConcurrencyConflict,
    RunAlreadyExists,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    RunNotFound,
    open_store,
)
from runstate.adapters.postgres import PostgresStore
from runstate.testing.contract import bootstrap_input, new_run_id

pytestmark = pytest.mark.postgres


async def _open(postgres_url: str, schema: str, pool_size: int, **options: Any) -> PostgresStore:
    store = await open_store(postgres_url, schema=schema, pool_size=pool_size, **options)
    assert isinstance(store, PostgresStore)
    return store


def _count_statements(store: PostgresStore) -> list[int]:
    """Count the statements the store's write batchers send."""
    counter = [0]
    for batcher in (store._bootstraps, store._appends):
        original = batcher._run

        async def counted(action: str, work: Any, original: Any = original) -> Any:
            counter[0] += 1
            return await original(action, work)

        batcher._run = counted
    return counter


async def test_concurrent_bootstraps_share_statements_and_keep_their_outcomes(
    postgres_url: str, schema: str
) -> None:
    store = await _open(postgres_url, schema, pool_size=4)
    try:
        statements = _count_statements(store)
        twin = new_run_id()
        run_ids = [new_run_id() for _ in range(30)] + [twin, twin]
        outcomes = await asyncio.gather(
            *(
                store.bootstrap_run_tx(bootstrap_input(r, "RunQueued", "RunStarted"))
                for r in run_ids
            ),
            return_exceptions=True,
        )
        assert statements[0] < len(run_ids)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failures) == 1
        assert isinstance(failures[0], RunAlreadyExists)
        assert failures[0].run_id == twin
        for run_id in set(run_ids):
            events = await store.list_events(run_id)
            assert [e.seq for e in events] == [1, 2]
    finally:
        await store.close()


@pytest.mark.parametrize("statements", [1, 3])
async def test_batched_appends_to_one_run_keep_call_order(
    postgres_url: str, schema: str, statements: int
) -> None:
    store = await _open(postgres_url, schema, pool_size=4, write_statements=statements)
    try:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        calls = [
            store.append_and_enqueue_tx(run_id, [RunEventInput(type="Step", payload={"n": n})])
            for n in range(40)
        ]
        results = await asyncio.gather(*calls)
        seqs = [result.appended[0].seq for result in results]
        assert seqs == list(range(2, 42))
        events = await store.list_events(run_id)
        assert [e.payload.get("n") for e in events[1:]] == list(range(40))
    finally:
        await store.close()


async def test_no_deadlock_between_batches_and_a_registering_relay(
    postgres_url: str, schema: str
) -> None:
    stores = [await _open(postgres_url, schema, pool_size=4) for _ in range(2)]
    try:
        run_ids = [new_run_id() for _ in range(6)]
        for run_id in run_ids:
            await stores[0].bootstrap_run_tx(bootstrap_input(run_id))
        done = asyncio.Event()

        async def relay_registering() -> int:
            registrations = 0
            while not done.is_set():
                # Each wait registers the relay: runstate_watch takes the lock exclusively.
                await stores[1].wait_for_outbox(0.01)
                registrations += 1
            return registrations

        async def writer(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(15):
                await stores[seed % 2].append_and_enqueue_tx(
                    rng.choice(run_ids), [RunEventInput(type="Step")]
                )

        watcher = asyncio.create_task(relay_registering())
        await asyncio.wait_for(asyncio.gather(*(writer(seed) for seed in range(16))), 60)
        done.set()
        assert await watcher > 0
        total = sum([len(await stores[0].list_events(r)) for r in run_ids])
        assert total == 6 + 16 * 15
        for run_id in run_ids:
            events = await stores[0].list_events(run_id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
    finally:
        for store in stores:
            await store.close()


async def test_a_write_cancelled_while_it_waits_for_a_statement_is_never_sent(
    postgres_url: str, schema: str, admin: Any
) -> None:
    store = await open_store(postgres_url, schema=schema, pool_size=4, write_statements=1)
    assert isinstance(store, PostgresStore)
    try:
        held, cancelled, after = new_run_id(), new_run_id(), new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(held))
        async with admin.transaction():
            # The only append statement waits for this row lock ...
            await lock_run_row(admin, schema, held)
            blocked = asyncio.ensure_future(
                store.append_and_enqueue_tx(held, [RunEventInput(type="Step")])
            )
            await asyncio.sleep(0.2)
            # ... so these appends queue behind it; one of them is cancelled while it waits.
            await store.bootstrap_run_tx(bootstrap_input(cancelled))
            await store.bootstrap_run_tx(bootstrap_input(after))
            victim = asyncio.ensure_future(
                store.append_and_enqueue_tx(cancelled, [RunEventInput(type="Lost")])
            )
            survivor = asyncio.ensure_future(
                store.append_and_enqueue_tx(after, [RunEventInput(type="Kept")])
            )
            await asyncio.sleep(0.05)
            victim.cancel()
        await blocked
        assert (await survivor).last_seq == 2
        with pytest.raises(asyncio.CancelledError):
            await victim
        assert [e.type for e in await store.list_events(cancelled)] == ["RunQueued"]
    finally:
        await store.close()


async def test_a_batch_mixes_new_runs_with_retries_and_conflicts(
    postgres_url: str, schema: str
) -> None:
    store = await _open(postgres_url, schema, pool_size=4)
    try:
        statements = _count_statements(store)
        retried, conflicted = new_run_id(), new_run_id()
        originals = {
            run_id: RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf", input={"n": 1}),
                first_events=[
                    RunEventInput(type="RunQueued", event_id=f"{run_id}-q"),
                    RunEventInput(type="RunStarted", event_id=f"{run_id}-s"),
                ],
            )
            for run_id in (retried, conflicted)
        }
        for request in originals.values():
            await store.bootstrap_run_tx(request)
        fresh = [new_run_id() for _ in range(6)]
        before = statements[0]
        outcomes = await asyncio.gather(
            store.bootstrap_run_tx(originals[retried]),  # the same request again
            store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=conflicted, workflow="other"),
                    first_events=[RunEventInput(type="RunQueued")],
                )
            ),
            *(store.bootstrap_run_tx(bootstrap_input(r, "RunQueued", "RunStarted")) for r in fresh),
            return_exceptions=True,
        )
        assert statements[0] - before < len(outcomes)
        same, other, *created = outcomes
        assert isinstance(same, RunAlreadyExists)
        assert same.same_request is True
        assert isinstance(other, RunAlreadyExists)
        assert other.same_request is False
        positions: list[int] = []
        for run_id, result in zip(fresh, created, strict=True):
            assert not isinstance(result, BaseException), result
            assert [(e.run_id, e.seq) for e in result.appended] == [(run_id, 1), (run_id, 2)]
            assert result.last_seq == 2
            positions.extend(e.position for e in result.appended)
            stored = await store.list_events(run_id)
            assert [e.position for e in stored] == [e.position for e in result.appended]
        assert len(set(positions)) == len(positions)
        assert [e.type for e in await store.list_events(conflicted)] == ["RunQueued", "RunStarted"]
    finally:
        await store.close()


async def test_a_batch_of_appends_keeps_each_runs_outcome(postgres_url: str, schema: str) -> None:
    store = await _open(postgres_url, schema, pool_size=4)
    try:
        ok, conflicted, duplicated = new_run_id(), new_run_id(), new_run_id()
        for run_id in (ok, conflicted, duplicated):
            await store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued", "RunStarted"))
        await store.append_and_enqueue_tx(duplicated, [RunEventInput(type="A", event_id="a")])
        statements = _count_statements(store)
        outcomes = await asyncio.gather(
            store.append_and_enqueue_tx(ok, [RunEventInput(type="A"), RunEventInput(type="B")]),
            store.append_and_enqueue_tx(conflicted, [RunEventInput(type="A")], expected_seq=1),
            store.append_and_enqueue_tx(
                duplicated,
                [RunEventInput(type="A", event_id="a"), RunEventInput(type="B", event_id="b")],
                expected_seq=3,
            ),
            store.append_and_enqueue_tx(new_run_id(), [RunEventInput(type="A")]),
            return_exceptions=True,
        )
        assert statements[0] < len(outcomes)
        first, refused, partly, missing = outcomes
        assert not isinstance(first, BaseException)
        assert [(e.type, e.seq) for e in first.appended] == [("A", 3), ("B", 4)]
        assert first.last_seq == 4
        assert isinstance(refused, ConcurrencyConflict)
        assert (refused.expected_seq, refused.actual_seq) == (1, 2)
        assert not isinstance(partly, BaseException)
        assert [(e.event_id, e.seq) for e in partly.appended] == [("b", 4)]
        assert partly.deduplicated == ("a",)
        assert partly.last_seq == 4
        assert isinstance(missing, RunNotFound)
        assert [e.seq for e in await store.list_events(conflicted)] == [1, 2]
        after = await store.append_and_enqueue_tx(
            duplicated, [RunEventInput(type="C")], expected_seq=4
        )
        assert after.appended[0].seq == 5
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("function", "arguments"),
    [
        (
            "runstate_bootstrap_batch",
            """'[["a","w",null,null,null,"{}","{}","2026-01-01T00:00:00+00:00",1,"""
            """[["e1","Q","{}",1,null]]],"""
            """["a","w",null,null,null,"{}","{}","2026-01-01T00:00:00+00:00",1,"""
            """[["e2","Q","{}",1,null]]]]'""",
        ),
        (
            "runstate_append_batch",
            """'[["a",null,[["e1","Q","{}",1,null]]],["a",null,[["e2","Q","{}",1,null]]]]'""",
        ),
    ],
)
async def test_the_batch_functions_refuse_repeated_run_ids(
    postgres_url: str, schema: str, admin: Any, function: str, arguments: str
) -> None:
    store = await _open(postgres_url, schema, pool_size=2)  # migrates the schema
    await store.close()
    with pytest.raises(asyncpg.RaiseError, match="distinct"):
        await admin.fetch(f'SELECT * FROM "{schema}".{function}({arguments})')  # noqa: S608


async def _append_answer(admin: Any, schema: str, batch: list[Any], run: str) -> Any:
    """The first run's share of a ``runstate_append_batch`` call and what it wrote."""
    q = f'"{schema}"'
    row = await admin.fetchrow(
        f"SELECT * FROM {q}.runstate_append_batch($1::jsonb)",  # noqa: S608
        json.dumps(batch),
    )
    code, before, after = row["o_codes"][0], row["o_last_seqs"][0], row["o_new_last_seqs"][0]
    written = after - before if code == "OK" else 0
    stored = await admin.fetch(
        f"SELECT e.seq, e.event_id, e.type, e.payload::text, e.occurred_at, o.workflow"  # noqa: S608
        f" FROM {q}.run_events AS e JOIN {q}.run_outbox AS o ON o.outbox_id = e.position"
        " WHERE e.run_id = $1 ORDER BY e.seq",
        run,
    )
    last_seq = await admin.fetchval(
        f"SELECT last_seq FROM {q}.run_metadata WHERE run_id = $1",  # noqa: S608
        run,
    )
    positions = row["o_positions"][:written]
    return (
        code,
        before,
        after,
        list(row["o_candidates"][:written]),
        len(positions),
        positions == sorted(positions),
        [tuple(r) for r in stored],
        last_seq,
    )


@pytest.mark.parametrize(
    ("run", "expected_seq", "events"),
    [
        ("a", None, [["dup", "Q", "{}", 1, None], ["n1", "S", '{"x":1}', 1, None]]),
        ("a", 2, [["n2", "S", "{}", 1, "2026-01-02T00:00:00+00:00"]]),
        ("a", 1, [["n3", "S", "{}", 1, None]]),
        ("a", None, [["dup", "Q", "{}", 1, None]]),
        ("missing", None, [["n4", "S", "{}", 1, None]]),
    ],
    ids=["dedupe-and-append", "expected-seq-met", "conflict", "all-duplicates", "not-found"],
)
async def test_a_one_run_append_answers_as_the_same_run_in_a_batch(
    postgres_url: str, schema: str, admin: Any, run: str, expected_seq: int | None, events: Any
) -> None:
    # Migration 13 answers a batch of one run by lookups of its own: it must return what the
    # set-based statement returns for that run when it shares a batch with another.
    store = await _open(postgres_url, schema, pool_size=2)
    try:
        await store.bootstrap_run_tx(bootstrap_input("a", "Queued"))
        await store.bootstrap_run_tx(bootstrap_input("zz-companion", "Queued"))
        dup = (await store.list_events("a"))[0].event_id
        await store.append_and_enqueue_tx("a", [RunEventInput(type="Step")])  # last_seq 2
    finally:
        await store.close()
    item = [run, expected_seq, [[dup if e[0] == "dup" else e[0], *e[1:]] for e in events]]
    companion = ["zz-companion", None, [["c1", "S", "{}", 1, None]]]  # sorts after item
    answers = []
    for batch in ([item], [item, companion]):
        transaction = admin.transaction()
        await transaction.start()
        try:
            answers.append(await _append_answer(admin, schema, batch, run))
        finally:
            await transaction.rollback()
    assert answers[0] == answers[1]


async def test_back_to_back_writes_keep_their_connection_and_give_it_back_when_idle(
    postgres_url: str, schema: str
) -> None:
    store = await _open(postgres_url, schema, pool_size=3)
    store._kept._linger = 0.05  # a short linger keeps the test quick
    try:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        kept = store._kept
        from_pool = [0]
        original_take = kept.take

        def counting_take() -> Any:
            connection = original_take()
            if connection is None:
                from_pool[0] += 1
            return connection

        kept.take = counting_take  # type: ignore[method-assign]
        for n in range(20):
            await store.append_and_enqueue_tx(
                run_id, [RunEventInput(type="Step", payload={"n": n})]
            )
        # The bootstrap's connection may serve them all: the writers never fell idle.
        assert from_pool[0] <= 1
        # Writers idle for the linger hold nothing: the whole pool is free again.
        for _ in range(100):
            if store._pool.get_idle_size() == store._pool.get_size():
                break
            await asyncio.sleep(0.01)
        assert store._pool.get_idle_size() == store._pool.get_size()
        assert [e.seq for e in await store.list_events(run_id)] == list(range(1, 22))
    finally:
        await store.close()


async def test_an_operation_waiting_for_the_pool_gets_a_kept_connection_at_once(
    postgres_url: str, schema: str
) -> None:
    # One connection: while a write holds it, reads wait in the pool. The write must hand it
    # back rather than keep it for the linger (30 s here), or the reads would wait that long.
    store = await _open(postgres_url, schema, pool_size=1)
    store._kept._linger = 30.0
    try:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))

        async def appends() -> None:
            for n in range(20):
                event = RunEventInput(type="Step", payload={"n": n})
                await store.append_and_enqueue_tx(run_id, [event])

        async def reads() -> None:
            for _ in range(20):
                await store.get_run_metadata_by_run_id(run_id)
                await asyncio.sleep(0)

        await asyncio.wait_for(asyncio.gather(appends(), reads(), reads()), 10)
        assert [e.seq for e in await store.list_events(run_id)] == list(range(1, 22))
    finally:
        await store.close()


async def test_a_kept_connection_killed_between_writes_is_replaced(
    postgres_url: str, schema: str
) -> None:
    store = await _open(postgres_url, schema, pool_size=3)
    admin = await asyncpg.connect(postgres_url)
    try:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))

        async def writes(count: int) -> None:
            for n in range(count):
                event = RunEventInput(type="Step", payload={"n": n})
                await store.append_and_enqueue_tx(run_id, [event])

        await writes(3)
        # Keep a connection out of the pool, as a stream of writes does, then kill it.
        connection = await store._pool.acquire()
        store._kept.keep(connection)
        pid = connection.get_server_pid()
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        for _ in range(100):
            try:
                if connection.is_closed():
                    break
            except asyncpg.InterfaceError:
                break  # the pool took the lost connection back
            await asyncio.sleep(0.01)
        await writes(3)
        assert [e.seq for e in await store.list_events(run_id)] == list(range(1, 8))
    finally:
        await admin.close()
        await store.close()


async def test_closing_the_store_returns_kept_connections(postgres_url: str, schema: str) -> None:
    store = await _open(postgres_url, schema, pool_size=3)
    connection = await store._pool.acquire()
    assert store._kept.keep(connection)
    await asyncio.wait_for(store.close(), 5)
    assert store._pool._closed


async def test_an_append_costs_time_linear_in_its_events(postgres_url: str, schema: str) -> None:
    # Migration 0005's append compared every written event with every candidate (n * n): 3,200
    # events took 5.5 s here, so 10,000 would take about a minute. Linear, they take about 1 s.
    store = await _open(postgres_url, schema, pool_size=2)
    try:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id, "Queued"))
        duplicate = (await store.list_events(run_id))[0].event_id
        events = [RunEventInput(type="Step", payload={"n": n}) for n in range(10_000)]
        events.insert(5_000, RunEventInput(type="Queued", event_id=duplicate))
        started = asyncio.get_running_loop().time()
        result = await store.append_and_enqueue_tx(run_id, events, expected_seq=1)
        took = asyncio.get_running_loop().time() - started
        assert took < 15.0, f"10,000 events took {took:.1f}s"
        assert result.deduplicated == (duplicate,)
        assert [e.seq for e in result.appended] == list(range(2, 10_002))
        positions = [e.position for e in result.appended]
        assert positions == sorted(positions)
        assert [e.payload for e in result.appended[4_999:5_001]] == [{"n": 4_999}, {"n": 5_000}]
        stored = await store.list_events(run_id)
        assert [(e.seq, e.position, e.event_id) for e in stored[1:]] == [
            (e.seq, e.position, e.event_id) for e in result.appended
        ]
        assert (await store.outbox_stats()).pending == 10_001
    finally:
        await store.close()
