"""Group commit in the SQLite adapter's writer thread: shared commits, per-call atomicity."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from runstate import (
    ConcurrencyConflict,
    RunAlreadyExists,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    StoreUnavailable,
    open_store,
)
from runstate.adapters.sqlite import SQLiteStore
from runstate.adapters.sqlite._connect import SQLiteOptions
from runstate.adapters.sqlite._writer import LANE_WAIT, ConnectionThread


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[ConnectionThread]:
    """A writer worker on a fresh file with one scratch table."""
    worker = ConnectionThread(SQLiteOptions(path=str(tmp_path / "group.db")), "test-worker")
    await worker.call(lambda c: c.execute("CREATE TABLE t (v TEXT NOT NULL)"))
    try:
        yield worker
    finally:
        await worker.stop()


def insert(value: str) -> Callable[[sqlite3.Connection], str]:
    """A write job that inserts ``value``."""

    def job(connection: sqlite3.Connection) -> str:
        connection.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return job


def insert_then_fail(connection: sqlite3.Connection) -> None:
    """A write job that writes, then refuses: its row must not survive."""
    connection.execute("INSERT INTO t (v) VALUES ('doomed')")
    raise ValueError("refused")


def lose_transaction(connection: sqlite3.Connection) -> None:
    """A write job after which SQLite has rolled the whole transaction back."""
    connection.execute("ROLLBACK")
    raise sqlite3.OperationalError("disk I/O error (simulated)")


async def grouped(
    worker: ConnectionThread, *jobs: Callable[[sqlite3.Connection], Any]
) -> list[Any]:
    """Hold the worker until every job is queued, so that they run as one group."""
    gate = threading.Event()
    blocker = asyncio.create_task(worker.call(lambda c: gate.wait(5)))
    tasks = [asyncio.create_task(worker.write(job)) for job in jobs]
    await asyncio.sleep(0.05)
    gate.set()
    await blocker
    return await asyncio.gather(*tasks, return_exceptions=True)


async def rows(worker: ConnectionThread) -> list[str]:
    """The scratch table's values."""
    return await worker.call(lambda c: [r[0] for r in c.execute("SELECT v FROM t ORDER BY v")])


async def count_transactions(worker: ConnectionThread) -> list[str]:
    """Start recording the statements that begin a transaction on the worker's connection."""
    begun: list[str] = []

    def trace(statement: str) -> None:
        if statement.startswith("BEGIN"):
            begun.append(statement)

    await worker.call(lambda c: c.set_trace_callback(trace))
    return begun


async def test_queued_writes_share_one_transaction(worker: ConnectionThread) -> None:
    begun = await count_transactions(worker)
    outcomes = await grouped(worker, insert("a"), insert_then_fail, insert("b"))
    assert outcomes[0] == "a"
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[2] == "b"
    assert await rows(worker) == ["a", "b"]
    assert len(begun) == 1


async def test_a_lost_transaction_fails_every_call_of_the_group(worker: ConnectionThread) -> None:
    outcomes = await grouped(worker, insert("a"), lose_transaction, insert("b"))
    assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
    assert len({id(o) for o in outcomes}) == 3  # each caller gets its own exception
    assert await rows(worker) == []
    # The worker goes on with a clean connection.
    assert await worker.write(insert("c")) == "c"
    assert await rows(worker) == ["c"]


async def test_a_lone_write_needs_no_savepoint(worker: ConnectionThread) -> None:
    begun = await count_transactions(worker)
    assert await worker.write(insert("solo")) == "solo"
    with pytest.raises(ValueError, match="refused"):
        await worker.write(insert_then_fail)
    assert await rows(worker) == ["solo"]
    assert len(begun) == 2


async def test_store_calls_in_one_group_keep_their_own_outcomes(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        assert isinstance(store, SQLiteStore)
        begun = await count_transactions(store._writer)
        runs = [f"run-{i}" for i in range(10)]

        def bootstrap(run_id: str) -> RunBootstrapInput:
            return RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf"),
                first_events=[RunEventInput(type="RunQueued")],
            )

        inputs = [bootstrap(r) for r in runs]
        calls = [store.bootstrap_run_tx(item) for item in inputs]
        calls += [store.bootstrap_run_tx(inputs[0]), store.bootstrap_run_tx(bootstrap(runs[1]))]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        names = [type(o).__name__ for o in outcomes]
        assert names == ["AppendResult"] * 10 + ["RunAlreadyExists"] * 2
        retry, other = outcomes[-2:]
        assert isinstance(retry, RunAlreadyExists)
        assert retry.same_request is True
        assert isinstance(other, RunAlreadyExists)
        assert other.same_request is False
        appends = await asyncio.gather(
            *(
                store.append_and_enqueue_tx("run-1", [RunEventInput(type="X")], expected_seq=1)
                for _ in range(5)
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(o, ConcurrencyConflict) for o in appends) == 4
        assert [e.seq for e in await store.list_events("run-1")] == [1, 2]
        # 17 calls, fewer transactions: queued calls were committed together.
        assert len(begun) < 17


def recorded(order: list[str], value: str, hold: Callable[[], None] | None = None) -> Any:
    """A write job that inserts ``value`` and notes when it ran; ``hold`` runs first."""

    def job(connection: sqlite3.Connection) -> str:
        if hold is not None:
            hold()
        connection.execute("INSERT INTO t (v) VALUES (?)", (value,))
        order.append(value)
        return value

    return job


async def test_a_first_lane_write_cuts_into_a_long_group(worker: ConnectionThread) -> None:
    order: list[str] = []
    started, lane_queued = threading.Event(), threading.Event()

    def hold() -> None:
        # The group's first job: it outlasts LANE_WAIT while the lane job is queued.
        started.set()
        lane_queued.wait(5)
        time.sleep(LANE_WAIT * 2)

    gate = threading.Event()
    blocker = asyncio.create_task(worker.call(lambda c: gate.wait(5)))
    names = ["g0", "g1", "g2", "g3"]
    group = [
        asyncio.create_task(worker.write(recorded(order, name, hold if name == "g0" else None)))
        for name in names
    ]
    await asyncio.sleep(0.05)
    gate.set()
    await blocker
    assert await asyncio.to_thread(started.wait, 5)
    lane = asyncio.create_task(worker.write_first(recorded(order, "lane")))
    await asyncio.sleep(0)  # the lane job is queued once its task first runs
    lane_queued.set()
    assert await asyncio.gather(lane, *group) == ["lane", *names]
    # Committed early after g0, the group went on after the lane job, in queue order.
    assert order == ["g0", "lane", "g1", "g2", "g3"]
    assert await rows(worker) == sorted(["lane", *names])


async def test_first_lane_jobs_go_before_queued_jobs(worker: ConnectionThread) -> None:
    order: list[str] = []
    gate = threading.Event()
    blocker = asyncio.create_task(worker.call(lambda c: gate.wait(5)))
    queued = [
        asyncio.create_task(worker.write(recorded(order, "write"))),
        asyncio.create_task(worker.call(lambda c: order.append("call"))),
    ]
    await asyncio.sleep(0.05)
    first = [
        asyncio.create_task(worker.call_first(lambda c: order.append("first call"))),
        asyncio.create_task(worker.write_first(recorded(order, "first write"))),
    ]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(blocker, *queued, *first)
    assert order == ["first call", "first write", "write", "call"]


async def test_the_writer_wakes_relays_as_it_commits(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'wake.db'}") as store:
        assert isinstance(store, SQLiteStore)
        metadata = RunMetadata(run_id="woken", workflow="wf")
        waiting = asyncio.create_task(store.wait_for_outbox(60))
        await asyncio.sleep(0.05)
        await store.bootstrap_run_tx(
            RunBootstrapInput(metadata=metadata, first_events=[RunEventInput(type="RunQueued")])
        )
        # Woken by the commit, not by the 60 s timeout (nor a poll: no other process writes).
        await asyncio.wait_for(waiting, 10)
        batch = await store.claim_outbox_batch(owner="o", limit=10, lease_seconds=30)
        assert [record.event.seq for record in batch] == [1]
