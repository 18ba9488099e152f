"""Crash consistency: writer processes SIGKILLed at random moments leave no half-written run.

Each round starts writer OS processes (``tests/_crash_writer.py``: several asyncio tasks
bootstrapping runs and appending to them) and SIGKILLs them all at a random moment, usually
with transactions in flight. Afterwards every run must be whole (metadata, its three first
events and their outbox records) or absent, seqs gapless, every event paired with exactly one
outbox record, and a relay must deliver exactly the stored events.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from _proxy import Link, TcpProxy
from conftest import StoreFactory, drop_postgres_schema, unique_schema
from runstate import (
    AppendResult,
    OutboxStore,
    RunAlreadyExists,
    RunBootstrapInput,
    RunEngine,
    RunEventInput,
    RunEventPersisted,
    RunMetadata,
    RunStateStore,
    RunStatus,
    StoreUnavailable,
    open_store,
)
from runstate.relay import Relay
from runstate.relay.metrics import RelayMetrics
from runstate.sinks import CallableSink
from runstate.store import RunCatalog

WRITER = str(Path(__file__).with_name("_crash_writer.py"))
FIRST_TYPES = ["RunQueued", "StepStarted", "StepSucceeded"]
# Seqs a run can end at: each write is one transaction (3 first events, then 1, 1, 2 more).
WHOLE_LENGTHS = {3, 4, 5, 7}
ROUNDS = 12
PROCESSES_PER_ROUND = 2
TASKS_PER_PROCESS = 4
SEED = int(os.environ.get("RUNSTATE_CRASH_SEED", random.randrange(2**32)))

Integrity = Callable[[], Awaitable[dict[str, int]]]


async def _start_writer(url: str, prefix: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        WRITER,
        url,
        prefix,
        str(TASKS_PER_PROCESS),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if line.strip() != b"ready":
        _, err = await process.communicate()
        raise AssertionError(f"writer did not start: {line!r} {err.decode()}")
    return process


async def kill_writers_at_random(url: str, rng: random.Random) -> int:
    """Run ``ROUNDS`` rounds of writers, SIGKILLing each round at a random moment."""
    kills = 0
    for round_ in range(ROUNDS):
        processes = await asyncio.gather(
            *(_start_writer(url, f"r{round_}p{i}") for i in range(PROCESSES_PER_ROUND))
        )
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        for process in processes:
            process.send_signal(signal.SIGKILL)
        for process in processes:
            _, err = await process.communicate()
            # Anything but death by our SIGKILL means the writer failed on its own.
            assert process.returncode == -signal.SIGKILL, err.decode()
            kills += 1
    return kills


async def check_store(store: RunStateStore, integrity: Integrity) -> None:
    """Every run whole or absent, seqs gapless, outbox paired, relay delivers exactly that."""
    assert isinstance(store, RunCatalog)
    assert isinstance(store, OutboxStore)
    problems = await integrity()
    assert problems == {
        "events_without_run": 0,
        "events_without_outbox": 0,
        "outbox_without_event": 0,
        "runs_without_events": 0,
        "duplicate_seqs": 0,
    }, f"seed {SEED}"
    expected: dict[str, tuple[str, str]] = {}  # message id -> (event id, type)
    lengths: Counter[int] = Counter()
    offset = 0
    while page := await store.list_runs(limit=200, offset=offset):
        offset += len(page)
        for summary in page:
            run_id = summary.metadata.run_id
            metadata = await store.get_run_metadata_by_run_id(run_id)
            assert metadata is not None
            assert metadata.workflow == "crash"
            events = await store.list_events(run_id)
            seqs = [event.seq for event in events]
            assert seqs == list(range(1, len(events) + 1)), (run_id, seqs, SEED)
            assert len(events) in WHOLE_LENGTHS, (run_id, seqs, SEED)
            assert [event.type for event in events[:3]] == FIRST_TYPES
            assert [event.payload["i"] for event in events] == list(range(len(events)))
            assert all(event.payload["run"] == run_id for event in events)
            assert summary.last_seq == len(events)
            lengths[len(events)] += 1
            for event in events:
                expected[f"{run_id}:{event.seq}"] = (event.event_id, event.type)
    assert sum(lengths.values()) > 0, "the writers wrote nothing before being killed"
    # The kills landed mid-work: some runs stopped before their last append.
    assert sum(count for length, count in lengths.items() if length < 7) > 0, lengths

    delivered: list[dict[str, Any]] = []

    async def collect(envelope: dict[str, Any]) -> None:
        delivered.append(envelope)

    relay = Relay(store, CallableSink(collect), batch_size=250, metrics=RelayMetrics(export=False))
    report = await relay.run_once()
    ids = [envelope["id"] for envelope in delivered]
    assert len(ids) == len(set(ids)), "a record was delivered twice by one relay"
    assert set(ids) == set(expected)
    assert report.delivered == len(expected)
    for envelope in delivered:
        assert (envelope["eventid"], envelope["type"]) == expected[envelope["id"]]
    last_seq: dict[str, int] = {}
    for envelope in delivered:
        run_id = envelope["subject"]
        assert envelope["seq"] == last_seq.get(run_id, 0) + 1, "per-run order broken"
        last_seq[run_id] = envelope["seq"]
    stats = await store.outbox_stats()
    assert (stats.pending, stats.in_flight, stats.dead) == (0, 0, 0)


_SQLITE_CHECKS = {
    "events_without_run": "SELECT count(*) FROM runstate_events e"
    " WHERE NOT EXISTS (SELECT 1 FROM runstate_runs r WHERE r.run_id = e.run_id)",
    "events_without_outbox": "SELECT count(*) FROM runstate_events e"
    " WHERE NOT EXISTS (SELECT 1 FROM runstate_outbox o WHERE o.outbox_id = e.position)",
    "outbox_without_event": "SELECT count(*) FROM runstate_outbox o"
    " WHERE NOT EXISTS (SELECT 1 FROM runstate_events e WHERE e.position = o.outbox_id"
    " AND e.run_id = o.run_id AND e.seq = o.seq)",
    "runs_without_events": "SELECT count(*) FROM runstate_runs r"
    " WHERE NOT EXISTS (SELECT 1 FROM runstate_events e WHERE e.run_id = r.run_id)",
    "duplicate_seqs": "SELECT count(*) FROM (SELECT run_id, seq FROM runstate_events"
    " GROUP BY run_id, seq HAVING count(*) > 1)",
}

_POSTGRES_CHECKS = {
    name: sql.replace("runstate_runs", "run_metadata")
    .replace("runstate_events", "run_events")
    .replace("runstate_outbox", "run_outbox")
    .replace("HAVING count(*) > 1)", "HAVING count(*) > 1) AS d")
    for name, sql in _SQLITE_CHECKS.items()
}


@pytest.mark.slow
async def test_sigkilled_sqlite_writers_leave_whole_runs_or_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"
    # Create and migrate the file first, so writers only ever write.
    async with open_store(url):
        pass
    kills = await kill_writers_at_random(url, rng)
    assert kills >= 20

    def integrity() -> dict[str, int]:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            return {
                name: int(connection.execute(sql).fetchone()[0])
                for name, sql in _SQLITE_CHECKS.items()
            }
        finally:
            connection.close()

    async def integrity_async() -> dict[str, int]:
        return await asyncio.to_thread(integrity)

    async with open_store(url) as store:
        await check_store(store, integrity_async)


@pytest.mark.slow
@pytest.mark.postgres
async def test_sigkilled_postgres_writers_leave_whole_runs_or_nothing(
    postgres_url: str,
) -> None:
    rng = random.Random(SEED)
    schema = unique_schema()
    url = f"{postgres_url}?schema={schema}"
    try:
        async with open_store(url):
            pass
        kills = await kill_writers_at_random(url, rng)
        assert kills >= 20

        async def integrity() -> dict[str, int]:
            connection = await asyncpg.connect(postgres_url)
            try:
                await connection.execute(f'SET search_path TO "{schema}"')
                return {
                    name: int(await connection.fetchval(sql))
                    for name, sql in _POSTGRES_CHECKS.items()
                }
            finally:
                await connection.close()

        async with open_store(url) as store:
            await check_store(store, integrity)
    finally:
        await drop_postgres_schema(schema)


# -- the ambiguous commit -------------------------------------------------------------------
#
# When the connection drops during COMMIT the caller cannot know whether the bootstrap
# landed. A retried bootstrap_run_tx then gets RunAlreadyExists whose same_request says
# whether the stored run came from the same request, and RunEngine.create_run with an
# idempotency key treats our own earlier request as success.


class LostReplyStore:
    """Bootstraps for real, then raises ``StoreUnavailable`` as if the reply was lost.

    With ``blind_guard``, reads made by a task before its bootstrap see no run.
    """

    def __init__(self, inner: RunStateStore, *, lose: int = 1) -> None:
        self.inner = inner
        self.lose = lose
        self.blind_guard = False
        self._bootstrapped: set[asyncio.Task[Any] | None] = set()

    async def bootstrap_run_tx(self, input: RunBootstrapInput) -> AppendResult:
        self._bootstrapped.add(asyncio.current_task())
        result = await self.inner.bootstrap_run_tx(input)
        if self.lose > 0:
            self.lose -= 1
            raise StoreUnavailable("connection lost during COMMIT", retryable=True)
        return result

    async def append_and_enqueue_tx(
        self, run_id: str, events: Sequence[RunEventInput], *, expected_seq: int | None = None
    ) -> AppendResult:
        return await self.inner.append_and_enqueue_tx(run_id, events, expected_seq=expected_seq)

    async def list_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[RunEventPersisted]:
        return await self.inner.list_events(run_id, after_seq=after_seq, limit=limit)

    async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        if self.blind_guard and asyncio.current_task() not in self._bootstrapped:
            # A stale replica: the engine's guard (the read before the bootstrap) cannot see
            # the run, so the store's RunAlreadyExists.same_request decides.
            return None
        return await self.inner.get_run_metadata_by_run_id(run_id)

    async def close(self) -> None:
        await self.inner.close()


def _request(run_id: str, *, workflow: str = "orders", ids: Sequence[str] = ("q", "s")) -> Any:
    return RunBootstrapInput(
        metadata=RunMetadata(
            run_id=run_id, workflow=workflow, input={"sku": "é"}, labels={"team": "a"}
        ),
        first_events=[RunEventInput(type="RunQueued", event_id=ids[0])]
        + [RunEventInput(type="RunStarted", event_id=i) for i in ids[1:]],
    )


async def _assert_one_copy(store: RunStateStore, run_id: str, types: list[str]) -> None:
    events = await store.list_events(run_id)
    assert [e.type for e in events] == types
    assert [e.seq for e in events] == list(range(1, len(types) + 1))
    if isinstance(store, OutboxStore):
        records = await store.claim_outbox_batch(owner="check", limit=100, lease_seconds=30)
        mine = [r for r in records if r.event.run_id == run_id]
        assert [r.event.seq for r in mine] == [e.seq for e in events]
        await store.release_outbox([r.outbox_id for r in records], owner="check")


async def test_retried_bootstrap_after_lost_reply_says_same_request(
    store_factory: StoreFactory,
) -> None:
    inner = await store_factory()
    store = LostReplyStore(inner)
    run_id = f"amb-{uuid.uuid4().hex}"
    with pytest.raises(StoreUnavailable) as caught:
        await store.bootstrap_run_tx(_request(run_id))
    assert caught.value.retryable
    with pytest.raises(RunAlreadyExists) as retried:
        await store.bootstrap_run_tx(_request(run_id))
    assert retried.value.same_request is True
    # Anything else about the request differs: someone else's run.
    for other in (
        _request(run_id, workflow="billing"),
        _request(run_id, ids=("q", "other")),
        _request(run_id, ids=("x", "s")),
    ):
        with pytest.raises(RunAlreadyExists) as different:
            await store.bootstrap_run_tx(other)
        assert different.value.same_request is False
    await _assert_one_copy(inner, run_id, ["RunQueued", "RunStarted"])


@pytest.mark.parametrize("blind_guard", [False, True], ids=["guard", "store-decides"])
async def test_create_run_retries_after_lost_reply_are_success(
    store_factory: StoreFactory, blind_guard: bool
) -> None:
    inner = await store_factory()
    store = LostReplyStore(inner)
    metadata = RunMetadata(run_id=f"amb-{uuid.uuid4().hex}", workflow="orders", input=[1])
    engine = RunEngine(store)
    with pytest.raises(StoreUnavailable):
        await engine.create_run(metadata, mode="sync", idempotency_key="req-1")
    store.blind_guard = blind_guard
    # Several clients retry the same request at once, each with a fresh engine.
    states = await asyncio.gather(
        *(
            RunEngine(store).create_run(metadata, mode="sync", idempotency_key="req-1")
            for _ in range(8)
        )
    )
    assert {(s.run_id, s.status, s.last_seq) for s in states} == {
        (metadata.run_id, RunStatus.RUNNING, 2)
    }
    # Another key, or none, is a different request: refused, nothing written.
    for key in ("req-2", None):
        with pytest.raises(RunAlreadyExists) as caught:
            await RunEngine(store).create_run(metadata, mode="sync", idempotency_key=key)
        assert caught.value.same_request is False
    await _assert_one_copy(inner, metadata.run_id, ["RunQueued", "RunStarted"])


async def test_concurrent_first_attempts_with_one_key_create_one_run(
    store_factory: StoreFactory,
) -> None:
    # No earlier attempt at all: identical concurrent requests race in bootstrap_run_tx and
    # every loser learns from the store that the winner was the same request.
    inner = await store_factory()
    store = LostReplyStore(inner, lose=0)
    store.blind_guard = True
    metadata = RunMetadata(run_id=f"amb-{uuid.uuid4().hex}", workflow="orders")
    states = await asyncio.gather(
        *(RunEngine(store).create_run(metadata, idempotency_key="same") for _ in range(10))
    )
    assert {(s.status, s.last_seq) for s in states} == {(RunStatus.QUEUED, 1)}
    await _assert_one_copy(inner, metadata.run_id, ["RunQueued"])


class _DropAfterCommit:
    """A PostgreSQL protocol filter: once the client sends ``marker`` (a bind parameter of the
    bootstrap), swallow the server's reply up to its ReadyForQuery and cut the connection.

    In the extended protocol the server sends ReadyForQuery only after the implicit
    transaction committed at Sync, so the bootstrap has certainly landed when the reply is
    lost: the client sees a connection lost "during COMMIT"."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.dropped = 0

    def client(self, link: Link, data: bytes) -> None:
        tail = bytes(link.state.get("tail", b"")) + data
        if self.marker in tail and not self.dropped:
            link.state["armed"] = True
            link.state["buffer"] = b""
        link.state["tail"] = tail[-len(self.marker) :]

    def server(self, link: Link, data: bytes) -> bytes | None:
        if not link.state.get("armed"):
            return data
        buffer = bytes(link.state["buffer"]) + data
        link.state["buffer"] = buffer
        offset, seen_complete = 0, False
        while offset + 5 <= len(buffer):
            kind = buffer[offset : offset + 1]
            length = int.from_bytes(buffer[offset + 1 : offset + 5], "big")
            if offset + 1 + length > len(buffer):
                break
            if kind in (b"C", b"s"):  # CommandComplete, or PortalSuspended (fetchrow)
                seen_complete = True
            elif kind == b"Z" and seen_complete:
                self.dropped += 1
                return None  # committed, and the client never hears it
            offset += 1 + length
        return b""  # hold everything until the decision


@pytest.mark.postgres
async def test_postgres_connection_lost_after_commit_is_recognised_on_retry(
    postgres_url: str,
) -> None:
    schema = unique_schema()
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        proxied = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        url = f"{proxied}?schema={schema}&sslmode=disable"
        try:
            store = await open_store(url, pool_size=2)
            try:
                for attempt, mode in enumerate(("store", "engine", "engine-blind")):
                    marker = f"marker-{uuid.uuid4().hex}"
                    drop = _DropAfterCommit(marker.encode())
                    proxy.client_filter, proxy.server_filter = drop.client, drop.server
                    metadata = RunMetadata(
                        run_id=f"amb-pg-{attempt}-{uuid.uuid4().hex}",
                        workflow="orders",
                        input={"marker": marker},
                    )
                    if mode == "store":
                        request = RunBootstrapInput(
                            metadata=metadata,
                            first_events=[RunEventInput(type="RunQueued", event_id="q1")],
                        )
                        with pytest.raises(StoreUnavailable) as caught:
                            await store.bootstrap_run_tx(request)
                        assert drop.dropped == 1
                        assert caught.value.retryable
                        with pytest.raises(RunAlreadyExists) as retried:
                            await store.bootstrap_run_tx(request)
                        assert retried.value.same_request is True
                        other = RunBootstrapInput(
                            metadata=metadata,
                            first_events=[RunEventInput(type="RunQueued", event_id="q2")],
                        )
                        with pytest.raises(RunAlreadyExists) as different:
                            await store.bootstrap_run_tx(other)
                        assert different.value.same_request is False
                        await _assert_one_copy(store, metadata.run_id, ["RunQueued"])
                        continue
                    with pytest.raises(StoreUnavailable):
                        await RunEngine(store).create_run(
                            metadata, mode="sync", idempotency_key="k"
                        )
                    assert drop.dropped == 1
                    retrying: RunStateStore = store
                    if mode == "engine-blind":
                        wrapper = LostReplyStore(store, lose=0)
                        wrapper.blind_guard = True
                        retrying = wrapper
                    state = await RunEngine(retrying).create_run(
                        metadata, mode="sync", idempotency_key="k"
                    )
                    assert (state.status, state.last_seq) == (RunStatus.RUNNING, 2)
                    await _assert_one_copy(store, metadata.run_id, ["RunQueued", "RunStarted"])
            finally:
                await store.close()
        finally:
            await drop_postgres_schema(schema)
