"""runstate.sync beyond the contract suite: thread races on every adapter, two processes on one
SQLite file, the group commit, the executor on threads, the relay in a thread, the bridge."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import POSTGRES_URL, drop_postgres_schema, require_service, unique_schema
from runstate import open_store as open_async_store
from runstate.adapters.sqlite._callers import GroupCommit
from runstate.errors import StoreClosed
from runstate.sync import (
    JSON,
    ConcurrencyConflict,
    InvalidInput,
    LoopRunner,
    RelayThread,
    RunAlreadyExists,
    RunBootstrapInput,
    RunCancelledError,
    RunContext,
    RunEngine,
    RunEventInput,
    RunMetadata,
    RunStatus,
    SQLiteStore,
    StoreUnavailable,
    Worker,
    open_store,
    project,
    run_sync,
)

WRITER = str(Path(__file__).with_name("_sync_writer.py"))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def sync_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL on one adapter; every synchronous store opened on it sees the same data."""
    if request.param == "memory":
        yield f"memory://sync-{uuid.uuid4().hex}"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sync.db'}"
    else:
        require_service("PostgreSQL", "127.0.0.1", 5432)
        schema = unique_schema()
        try:
            yield f"{POSTGRES_URL}?schema={schema}&pool_size=12"
        finally:
            asyncio.run(drop_postgres_schema(schema))


def in_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` on ``count`` threads started together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    failures: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            work(index)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def bootstrap(run_id: str, *types: str, workflow: str = "wf") -> RunBootstrapInput:
    """A bootstrap of ``run_id`` with one event per type (default: RunQueued)."""
    return RunBootstrapInput(
        metadata=RunMetadata(run_id=run_id, workflow=workflow),
        first_events=[RunEventInput(type=t) for t in (types or ("RunQueued",))],
    )


def drain(store: Any) -> list[tuple[str, int]]:
    """Claim and deliver every claimable record; return ``(run_id, seq)`` in claim order."""
    seen: list[tuple[str, int]] = []
    while batch := store.claim_outbox_batch(owner="drain", limit=500, lease_seconds=30):
        seen.extend((r.event.run_id, r.event.seq) for r in batch)
        store.mark_delivered([r.outbox_id for r in batch], owner="drain")
    return seen


# -- races on every adapter -------------------------------------------------------------------


def test_fifty_threads_bootstrapping_one_run_id_have_exactly_one_winner(sync_url: str) -> None:
    run_id = f"race-{uuid.uuid4().hex}"
    outcomes: dict[int, object] = {}
    with open_store(sync_url) as first, open_store(sync_url) as second:
        stores = [first, second]

        def attempt(index: int) -> None:
            try:
                outcomes[index] = stores[index % 2].bootstrap_run_tx(
                    bootstrap(run_id, workflow=f"wf-{index}")
                )
            except RunAlreadyExists as exc:
                outcomes[index] = exc

        in_threads(50, attempt)
        winners = [i for i, o in outcomes.items() if not isinstance(o, RunAlreadyExists)]
        assert len(winners) == 1
        assert len(outcomes) == 50
        metadata = first.get_run_metadata_by_run_id(run_id)
        assert metadata is not None
        assert metadata.workflow == f"wf-{winners[0]}"
        assert [e.seq for e in second.list_events(run_id)] == [1]
        assert [s for r, s in drain(first) if r == run_id] == [1]


def test_twenty_threads_appending_to_one_run_get_gapless_seqs(sync_url: str) -> None:
    run_id = f"append-{uuid.uuid4().hex}"
    with open_store(sync_url) as first, open_store(sync_url) as second:
        first.bootstrap_run_tx(bootstrap(run_id))
        stores = [first, second]
        given: dict[int, list[int]] = {}

        def writer(index: int) -> None:
            seqs = given.setdefault(index, [])
            for step in range(5):
                event = RunEventInput(type="Step", payload={"w": index, "n": step})
                result = stores[index % 2].append_and_enqueue_tx(run_id, [event])
                seqs.extend(e.seq for e in result.appended)

        in_threads(20, writer)
        assert sorted(s for seqs in given.values() for s in seqs) == list(range(2, 102))
        events = second.list_events(run_id)
        assert [e.seq for e in events] == list(range(1, 102))
        positions = [e.position for e in events]
        assert positions == sorted(set(positions))
        for index in range(20):
            assert [e.payload["n"] for e in events if e.payload.get("w") == index] == list(range(5))
        assert sorted(s for r, s in drain(first) if r == run_id) == list(range(1, 102))


def test_threads_with_one_expected_seq_have_one_winner(sync_url: str) -> None:
    run_id = f"cas-{uuid.uuid4().hex}"
    with open_store(sync_url) as store:
        store.bootstrap_run_tx(bootstrap(run_id))
        conflicts: list[ConcurrencyConflict] = []

        def attempt(index: int) -> None:
            try:
                store.append_and_enqueue_tx(run_id, [RunEventInput(type="X")], expected_seq=1)
            except ConcurrencyConflict as exc:
                conflicts.append(exc)

        in_threads(10, attempt)
        assert len(conflicts) == 9
        assert {(c.expected_seq, c.actual_seq) for c in conflicts} == {(1, 2)}
        assert len(store.list_events(run_id)) == 2


def test_closed_store_refuses_calls(sync_url: str) -> None:
    store = open_store(sync_url)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreClosed):
        store.list_events("r")
    with pytest.raises(StoreClosed):
        store.bootstrap_run_tx(bootstrap("r"))


def test_engine_shared_by_threads_writes_one_transition(sync_url: str) -> None:
    with open_store(sync_url) as store:
        engine = RunEngine(store)
        run_id = engine.create_run(
            RunMetadata(run_id=f"eng-{uuid.uuid4().hex}", workflow="w")
        ).run_id
        started: list[object] = []

        def start(index: int) -> None:
            try:
                started.append(engine.start(run_id, worker=f"t{index}"))
            except InvalidInput as exc:  # pragma: no cover - would be a bug
                started.append(exc)
            except Exception as exc:
                started.append(type(exc).__name__)

        in_threads(10, start)
        assert started.count("InvalidTransition") == 9
        assert [e.type for e in store.list_events(run_id)] == ["RunQueued", "RunStarted"]


# -- SQLite: processes and the group commit -------------------------------------------------------


def test_two_processes_on_one_sqlite_file_keep_every_guarantee(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'two.db'}"
    with open_store(url) as store:
        store.bootstrap_run_tx(bootstrap("common"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writers = [
        subprocess.Popen(
            [sys.executable, WRITER, url, name], stdout=subprocess.PIPE, text=True, env=env
        )
        for name in ("left", "right")
    ]
    try:
        for writer in writers:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "ready"
        Path(str(tmp_path / "two.db") + ".go").touch()
        reports = [json.loads(writer.communicate(timeout=120)[0]) for writer in writers]
    finally:
        for writer in writers:
            writer.kill()
    assert all(writer.returncode == 0 for writer in writers)
    won = [set(report["won"]) for report in reports]
    assert won[0].isdisjoint(won[1])
    assert won[0] | won[1] == {f"shared-{n}" for n in range(40)}
    given = sorted(seq for report in reports for seq in report["seqs"])
    assert given == list(range(2, 402))
    with open_store(url) as store:
        assert [e.seq for e in store.list_events("common")] == list(range(1, 402))
        for n in range(40):
            metadata = store.get_run_metadata_by_run_id(f"shared-{n}")
            assert metadata is not None
            winner = "left" if f"shared-{n}" in won[0] else "right"
            assert metadata.workflow == winner
        delivered = drain(store)
        assert len(delivered) == len(set(delivered)) == 401 + 40


def test_group_commit_shares_commits_and_keeps_each_outcome() -> None:
    groups: list[int] = []
    first_running = threading.Event()
    release_first = threading.Event()

    def run(jobs: list[Any]) -> list[tuple[bool, Any]]:
        groups.append(len(jobs))
        if len(groups) == 1:
            first_running.set()
            release_first.wait(5)
        return [(value >= 0, value if value >= 0 else ValueError(value)) for _, (value,) in jobs]

    group = GroupCommit(run)
    results: dict[int, object] = {}

    def submit(value: int) -> None:
        try:
            results[value] = group.submit((print, (value,)))
        except ValueError as exc:
            results[value] = exc

    leader = threading.Thread(target=submit, args=(0,))
    leader.start()
    assert first_running.wait(5)
    followers = [threading.Thread(target=submit, args=(v,)) for v in (1, -2, 3, -4, 5, 6, 7)]
    for thread in followers:
        thread.start()
    while len(group._waiting) < 7:  # every follower waits for the next commit
        time.sleep(0.001)
    release_first.set()
    for thread in [leader, *followers]:
        thread.join()
    assert groups == [1, 7]
    assert {k: v for k, v in results.items() if k >= 0} == {0: 0, 1: 1, 3: 3, 5: 5, 6: 6, 7: 7}
    assert isinstance(results[-2], ValueError)
    assert isinstance(results[-4], ValueError)


def test_group_commit_survives_an_interrupted_leader() -> None:
    calls = 0

    def run(jobs: list[Any]) -> list[tuple[bool, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt
        return [(True, "ok") for _ in jobs]

    group = GroupCommit(run)
    with pytest.raises(KeyboardInterrupt):
        group.submit((print, ()))
    assert group.submit((print, ())) == "ok"
    group.drain()


def test_sqlite_writes_of_threads_share_transactions(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'group.db'}") as store:
        assert isinstance(store, SQLiteStore)
        run_ids = [f"g-{i}" for i in range(16)]

        def boot(index: int) -> None:
            # Two threads per run id: one wins, the other gets its own RunAlreadyExists.
            try:
                store.bootstrap_run_tx(bootstrap(run_ids[index // 2], "A", "B"))
            except RunAlreadyExists as exc:
                refused.append(exc.same_request)

        refused: list[bool | None] = []
        in_threads(32, boot)
        # Each thread's request has its own event ids: every loser hears of a different one.
        assert refused == [False] * 16
        for run_id in run_ids:
            assert [e.seq for e in store.list_events(run_id)] == [1, 2]
        assert len(drain(store)) == 32


def test_sqlite_wait_for_outbox_wakes_on_another_threads_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wake.db'}"
    with open_store(url) as relay_side, open_store(url) as writer_side:
        assert isinstance(relay_side, SQLiteStore)
        woke: list[float] = []

        def wait() -> None:
            relay_side.wait_for_outbox(10.0)
            woke.append(time.monotonic())

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.05)
        started = time.monotonic()
        writer_side.bootstrap_run_tx(bootstrap("r"))
        waiter.join(5)
        assert woke
        assert woke[0] - started < 1.0


# -- memory://name is shared with the async stores ------------------------------------------------


async def test_sync_and_async_memory_stores_share_a_name_and_wake_each_other() -> None:
    name = f"memory://shared-{uuid.uuid4().hex}"
    async_store = await open_async_store(name)
    sync_store = open_store(name)
    try:
        waiter = asyncio.create_task(async_store.wait_for_outbox(10.0))  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
        started = time.monotonic()
        await asyncio.to_thread(sync_store.bootstrap_run_tx, bootstrap("from-sync"))
        await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - started < 1.0
        assert [e.seq for e in await async_store.list_events("from-sync")] == [1]
        await async_store.bootstrap_run_tx(bootstrap("from-async"))
        assert [e.seq for e in sync_store.list_events("from-async")] == [1]
    finally:
        sync_store.close()
        await async_store.close()


# -- the executor on threads --------------------------------------------------------------------


def double(ctx: RunContext) -> JSON:
    """A two-step handler: read the input, double it."""
    assert isinstance(ctx.input, dict)
    with ctx.step("read"):
        n = ctx.input["n"]
    with ctx.step("double", input=n):
        assert isinstance(n, int)
        result = n * 2
    return {"result": result}


def metadata(value: int = 0) -> RunMetadata:
    """Metadata for a fresh run whose input is ``{"n": value}``."""
    return RunMetadata(run_id=f"ex-{uuid.uuid4().hex}", workflow="double", input={"n": value})


def test_worker_threads_drive_queued_runs_to_success(sync_url: str) -> None:
    with open_store(sync_url) as store:
        engine = RunEngine(store)
        with Worker(engine, double, concurrency=3) as worker:
            created = [engine.create_run(metadata(i)) for i in range(6)]
            worker.join()
        for index, run in enumerate(created):
            state = engine.get_run(run.run_id)
            assert state is not None
            assert state.status is RunStatus.SUCCEEDED
            assert state.output == {"result": index * 2}
            assert (state.steps_started, state.steps_succeeded) == (2, 2)
            assert worker.results[run.run_id] == state
            stored = store.get_run_metadata_by_run_id(run.run_id)
            assert stored is not None
            assert project(stored, store.list_events(run.run_id)) == state


def test_worker_retries_then_fails_and_stop_lets_the_run_finish() -> None:
    engine = RunEngine(open_store("memory://"))
    entered = threading.Event()

    def flaky(ctx: RunContext) -> JSON:
        with ctx.step("call-api"):
            if ctx.input == {"n": 1} and ctx.attempt < 3:
                raise ConnectionError(f"attempt {ctx.attempt}")
            if ctx.input == {"n": 2}:
                raise ValueError("always broken")
            if ctx.input == {"n": 3}:
                entered.set()
                time.sleep(0.2)
        return ctx.attempt

    worker = Worker(engine, flaky, max_attempts=3, concurrency=2)
    worker.start()
    recovers = engine.create_run(metadata(1))
    broken = engine.create_run(metadata(2))
    worker.join()
    slow = engine.create_run(metadata(3))
    assert entered.wait(5)
    worker.stop()  # the thread driving the slow run finishes it first
    good, bad, finished = (engine.get_run(r.run_id) for r in (recovers, broken, slow))
    assert good is not None
    assert (good.status, good.attempt, good.output) == (RunStatus.SUCCEEDED, 3, 3)
    assert bad is not None
    assert (bad.status, bad.error) == (
        RunStatus.FAILED,
        {"type": "ValueError", "message": "always broken"},
    )
    assert finished is not None
    assert finished.status is RunStatus.SUCCEEDED
    queued = engine.create_run(metadata(4))  # nobody listens any more
    time.sleep(0.05)
    state = engine.get_run(queued.run_id)
    assert state is not None
    assert state.status is RunStatus.QUEUED


def test_run_sync_and_cancellation_at_a_step_boundary() -> None:
    engine = RunEngine(open_store("memory://"))
    state = run_sync(engine, metadata(21), double)
    assert (state.status, state.output) == (RunStatus.SUCCEEDED, {"result": 42})

    def cancelled_midway(ctx: RunContext) -> JSON:
        with ctx.step("first"):
            engine.cancel(ctx.run_id, reason="user")
        with ctx.step("never"):  # pragma: no cover - the boundary raises first
            pass
        return None

    final = run_sync(engine, metadata(1), cancelled_midway)
    assert final.status is RunStatus.CANCELLED
    assert final.steps_started == 1
    with pytest.raises(RunCancelledError):
        RunContext(engine, final, poll_interval=0.01).checkpoint()


# -- the relay in a background thread --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_relay_thread_delivers_and_stops_cleanly(kind: str, tmp_path: Path) -> None:
    url = (
        f"memory://relay-{uuid.uuid4().hex}"
        if kind == "memory"
        else f"sqlite:///{tmp_path / 'relay.db'}"
    )
    sink = tmp_path / "out.jsonl"
    with open_store(url) as store:
        for i in range(10):
            store.bootstrap_run_tx(bootstrap(f"run-{i}", "RunQueued", "RunStarted"))
        with RelayThread(url, f"file://{sink}", poll_interval=0.05) as relay:
            assert relay.running
            store.append_and_enqueue_tx("run-0", [RunEventInput(type="Late")])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if sink.exists() and len(sink.read_text().splitlines()) >= 21:
                    break
                time.sleep(0.02)
        assert not relay.running
        report = relay.report
        assert report is not None
        assert report.delivered == 21
        ids = [json.loads(line)["id"] for line in sink.read_text().splitlines()]
        assert sorted(ids) == sorted(
            [f"run-{i}:{s}" for i in range(10) for s in (1, 2)] + ["run-0:3"]
        )
        stats = store.outbox_stats()
        assert (stats.pending, stats.in_flight, stats.delivered) == (0, 0, 21)


def test_relay_thread_once_and_failures(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'once.db'}"
    with open_store(url) as store:
        store.bootstrap_run_tx(bootstrap("r", "A", "B"))
    relay = RelayThread(url, f"file://{tmp_path / 'once.jsonl'}", once=True)
    relay.start()
    report = relay.join(30)
    assert report.delivered == 2
    with pytest.raises(InvalidInput):
        RelayThread(url, "nope://sink").start()
    with pytest.raises(TypeError):
        RelayThread(url, "stdout://", handle_signals=True)


# -- the bridge: PostgreSQL and every other scheme -----------------------------------------------


def test_loop_runner_passes_the_loop_between_threads() -> None:
    runner = LoopRunner()

    async def work(index: int) -> int:
        await asyncio.sleep(0.001 * (index % 7))
        if index % 11 == 5:
            raise ValueError(index)
        return index * 3

    results: dict[int, object] = {}

    def call(index: int) -> None:
        for round_ in range(20):
            value = index * 100 + round_
            try:
                results[value] = runner.run(work(value))
            except ValueError as exc:
                results[value] = exc

    in_threads(12, call)
    assert len(results) == 240
    for value, result in results.items():
        if value % 11 == 5:
            assert isinstance(result, ValueError)
        else:
            assert result == value * 3
    runner.close(asyncio.sleep(0))
    with pytest.raises(StoreClosed):
        runner.run(asyncio.sleep(0))


@pytest.mark.postgres
async def test_postgres_store_works_from_inside_an_event_loop(postgres_url: str) -> None:
    # A notebook calling the synchronous API: the call runs on a helper thread.
    schema = unique_schema()
    store = open_store(postgres_url, schema=schema, pool_size=2)
    try:
        store.bootstrap_run_tx(bootstrap("nb"))
        assert [e.seq for e in store.list_events("nb")] == [1]
    finally:
        store.close()
        await drop_postgres_schema(schema)


@pytest.mark.postgres
def test_postgres_errors_are_the_async_adapters(postgres_url: str) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        open_store("postgresql://nobody:secret@127.0.0.1:1/test", connect_timeout=2)
    assert "secret" not in str(caught.value)
    with pytest.raises(InvalidInput):
        open_store(postgres_url, nonsense=1)


def test_open_store_defaults_and_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNSTATE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    with open_store() as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / "env.db")
    with pytest.raises(InvalidInput):
        open_store("nope://x")
    with pytest.raises(InvalidInput):
        open_store("sqlite:///:memory:")
    with pytest.raises(InvalidInput):
        open_store("memory://", colour="blue")
