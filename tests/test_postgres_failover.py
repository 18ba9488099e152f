"""PostgreSQL past one server: a multi-host store URL, failover to a promoted standby, read_url.

Each server test runs its own primary and synchronous standby on free loopback ports
(tests/_pg_cluster.py: initdb, pg_basebackup -R, pg_ctl); the shared server on 5432 is never
touched. The failover test keeps writers and a relay running while the primary is stopped
(immediate mode, as a crash) and the standby promoted: the same store objects go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from _pg_cluster import ServerPair, require_server_binaries, running_pair
from runstate import (
    InvalidInput,
    RunAlreadyExists,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    StoreUnavailable,
    open_store,
)
from runstate._url import parse_store_url
from runstate.adapters.postgres import PostgresStore, parse_config
from runstate.relay import Relay
from runstate.sinks.files import FileSink

pytestmark = pytest.mark.postgres

PASSWORD = "failover-pw-31337"  # trust authentication ignores it; it must never be shown


@pytest.fixture
def pair() -> Iterator[ServerPair]:
    """A fresh primary + synchronous standby; skipped (failed under CI) without the binaries."""
    require_server_binaries()
    with running_pair() as servers:
        yield servers


def store_url(pair: ServerPair, schema: str, **query: str) -> str:
    """The multi-host URL of the pair, primary first, with a password to keep hidden."""
    hosts = f"127.0.0.1:{pair.primary.port},127.0.0.1:{pair.standby.port}"
    params = "&".join(f"{key}={value}" for key, value in {"schema": schema, **query}.items())
    return f"postgresql://postgres:{PASSWORD}@{hosts}/postgres?{params}"


def bootstrap(run_id: str, event_id: str) -> RunBootstrapInput:
    """A new run with one first event whose id the test chooses."""
    return RunBootstrapInput(
        metadata=RunMetadata(run_id=run_id, workflow="failover"),
        first_events=[RunEventInput(type="RunQueued", event_id=event_id)],
    )


@dataclass
class Writers:
    """Writer tasks that bootstrap runs and append to them, retrying every refused write.

    A retry sends the same event ids, so a write that committed before its answer was lost
    is found again (deduplicated, or ``RunAlreadyExists`` with ``same_request``) rather than
    written twice. ``acked`` holds (time acknowledged, run id, event id).
    """

    store: Any
    acked: list[tuple[float, str, str]] = field(default_factory=list)
    failures: list[tuple[float, StoreUnavailable]] = field(default_factory=list)
    others: list[BaseException] = field(default_factory=list)
    stopping: bool = False

    async def _retrying(self, write: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                await write()
                return
            except StoreUnavailable as exc:
                self.failures.append((time.monotonic(), exc))
                await asyncio.sleep(0.02)
            except RunAlreadyExists as exc:
                # Only a retry of our own committed bootstrap may find the run there.
                if not exc.same_request:
                    raise
                return

    async def _bootstrap(self, run_id: str, event_id: str) -> None:
        await self._retrying(lambda: self.store.bootstrap_run_tx(bootstrap(run_id, event_id)))
        self.acked.append((time.monotonic(), run_id, event_id))

    async def _append(self, run_id: str, event: RunEventInput) -> None:
        await self._retrying(lambda: self.store.append_and_enqueue_tx(run_id, [event]))
        self.acked.append((time.monotonic(), run_id, event.event_id))

    async def run(self, name: str) -> None:
        """Write until ``stopping``: a run, then two appends to it, over and over."""
        number = 0
        try:
            while not self.stopping:
                run_id = f"{name}-{number}"
                await self._bootstrap(run_id, uuid.uuid4().hex)
                for step in range(2):
                    await self._append(
                        run_id, RunEventInput(type="StepStarted", payload={"n": step})
                    )
                number += 1
        except BaseException as exc:  # anything but StoreUnavailable is a failure of the test
            self.others.append(exc)
            raise


async def rows_on(url: str, schema: str) -> set[tuple[str, str]]:
    """Every (run_id, event_id) stored on the server at ``url``."""
    connection = await asyncpg.connect(url)
    try:
        # The schema is the test's own identifier (rs_failover_<hex>), not input.
        sql = f'SELECT run_id, event_id FROM "{schema}".run_events'  # noqa: S608
        rows = await connection.fetch(sql)
    finally:
        await connection.close()
    return {(row["run_id"], row["event_id"]) for row in rows}


def delivered(path: Path) -> list[dict[str, Any]]:
    """The CloudEvents the relay wrote so far, in file order."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check()`` every 0.1 s until true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def run_failover(pair: ServerPair, writers: Writers) -> tuple[float, float]:
    """With the writers running: stop the primary, wait, promote the standby, let the writers
    go on until the promoted server acknowledged writes; return (stopped at, promoted at)."""
    tasks = [asyncio.create_task(writers.run(f"w{index}")) for index in range(4)]
    try:
        await asyncio.sleep(1.5)
        stopped_at = time.monotonic()
        await asyncio.to_thread(pair.stop_primary, "immediate")
        await asyncio.sleep(1.0)  # the gap: no server takes writes
        await asyncio.to_thread(pair.promote)
        promoted_at = time.monotonic()
        await wait_for(
            lambda: any(at > promoted_at for at, _, _ in writers.acked),
            20,
            "a write acknowledged by the promoted server",
        )
        await asyncio.sleep(1.0)
    finally:
        writers.stopping = True
        await asyncio.gather(*tasks, return_exceptions=True)
    return stopped_at, promoted_at


def check_per_run_order(events: list[dict[str, Any]]) -> None:
    """Redeliveries repeat an id; first deliveries come in seq order, 1, 2, 3... per run."""
    assert all(e["id"] == f"{e['subject']}:{e['seq']}" for e in events)
    seen: set[str] = set()
    next_seq: dict[str, int] = {}
    for event in events:
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        assert event["seq"] == next_seq.get(event["subject"], 1), event["id"]
        next_seq[event["subject"]] = event["seq"] + 1


@pytest.mark.slow
async def test_writes_resume_on_the_same_store_after_the_standby_is_promoted(
    pair: ServerPair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="asyncpg")  # its reconnect loop logs tracebacks
    schema = f"rs_failover_{uuid.uuid4().hex[:8]}"
    url = store_url(pair, schema, target_session_attrs="read-write")
    sink_path = tmp_path / "delivered.jsonl"
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(url, command_timeout=10))
        relay_store = await stack.enter_async_context(open_store(url, command_timeout=10))
        assert isinstance(relay_store, PostgresStore)
        sink = FileSink(sink_path, fsync=False)
        await sink.open()
        stack.push_async_callback(sink.close)
        # Short leases: a record whose mark_delivered died with the old primary (its lease
        # replicated) holds its run back only until the lease expires, then goes out again.
        relay = Relay(
            relay_store, sink, batch_size=50, poll_interval=0.2, backoff_max=0.5, lease_seconds=3
        )
        relaying = asyncio.create_task(relay.run_forever())
        stack.push_async_callback(asyncio.wait_for, relaying, 30)
        stack.callback(relay.stop)
        writers = Writers(store)
        stopped_at, promoted_at = await run_failover(pair, writers)
        assert not writers.others

        # The gap: refused with StoreUnavailable, all retryable, none showing the password.
        assert any(stopped_at <= at for at, _ in writers.failures), "no write was refused"
        assert all(exc.retryable for _, exc in writers.failures)
        assert not any(PASSWORD in str(exc) for _, exc in writers.failures)
        before = {(run, event) for at, run, event in writers.acked if at < stopped_at}
        assert len(before) > 50
        assert any(at > promoted_at for at, _, _ in writers.acked)

        # Synchronous replication: every write acknowledged before the stop is on the
        # promoted server, and so is everything acknowledged since.
        stored = await rows_on(pair.standby.url, schema)
        assert before <= stored
        assert {(run, event) for _, run, event in writers.acked} <= stored

        # The relay delivers everything on the promoted server, in per-run order.
        await wait_for(
            lambda: {(e["subject"], e["eventid"]) for e in delivered(sink_path)} >= stored,
            30,
            f"the relay to deliver all {len(stored)} events",
        )

        # Its LISTEN connection found the new primary too: with nothing left to claim, a waiter
        # sleeps until a write wakes it.
        await eventually(lambda: outbox_settled(relay_store), 30, "the outbox to settle")
        waiter = asyncio.create_task(relay_store.wait_for_outbox(30))
        await asyncio.sleep(0.5)
        assert not waiter.done()
        await store.bootstrap_run_tx(bootstrap("after-failover", "e1"))
        started = time.monotonic()
        await asyncio.wait_for(waiter, 10)
        assert time.monotonic() - started < 5
        stored.add(("after-failover", "e1"))
        await wait_for(
            lambda: (
                ("after-failover", "e1")
                in {(e["subject"], e["eventid"]) for e in delivered(sink_path)}
            ),
            10,
            "the relay to deliver the write made after the failover",
        )
    events = delivered(sink_path)
    assert {(e["subject"], e["eventid"]) for e in events} == stored  # nothing unknown either
    check_per_run_order(events)


async def execute_on(url: str, sql: str) -> Any:
    """Run one statement on the server at ``url`` and return its first value."""
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Await ``check()`` every 0.1 s until true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def outbox_settled(store: Any) -> bool:
    """Whether every record is delivered and marked (none pending, none leased)."""
    stats = await store.outbox_stats()
    return bool(stats.pending == 0 and stats.in_flight == 0)


async def run_ids(store: Any) -> set[str]:
    """The runs ``list_runs`` shows."""
    return {summary.metadata.run_id for summary in await store.list_runs(limit=100)}


async def feed_runs(store: Any, cursor: str) -> set[str]:
    """The runs of the feed's events after ``cursor``."""
    return {event.run_id for event in (await store.read_feed(cursor=cursor)).events}


@pytest.mark.slow
async def test_read_url_serves_catalog_reads_from_the_standby(
    pair: ServerPair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="asyncpg")
    schema = f"rs_read_url_{uuid.uuid4().hex[:8]}"
    standby = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pair.standby.port}/postgres"
    url = store_url(pair, schema, read_url=quote(standby, safe=""))
    async with open_store(url) as store, open_store(url, replica_reads="all") as reader:
        assert isinstance(store, PostgresStore)
        assert PASSWORD not in repr(store)
        await store.bootstrap_run_tx(bootstrap("seen", "e1"))
        head = await store.feed_head()
        await eventually(lambda: catalog_has(store, "seen"), 10, "the standby to replay")

        # With replay paused the standby stays behind the primary: what comes from it shows.
        await execute_on(pair.standby.url, "SELECT pg_wal_replay_pause()")
        await store.bootstrap_run_tx(bootstrap("unseen", "e2"))
        assert await run_ids(store) == {"seen"}  # the catalog: from the standby
        assert "unseen" not in await feed_runs(store, head)  # the feed too
        stats = await store.outbox_stats()
        assert stats.pending + stats.in_flight == 1  # "unseen"'s record is not there yet
        # Reading your own writes: list_events and metadata stay on the primary by default...
        assert await store.get_run_metadata_by_run_id("unseen") is not None
        assert len(await store.list_events("unseen")) == 1
        # ... and replica_reads=all sends them to the standby as well.
        assert await reader.get_run_metadata_by_run_id("unseen") is None
        assert await reader.list_events("unseen") == []

        await execute_on(pair.standby.url, "SELECT pg_wal_replay_resume()")
        await eventually(lambda: reader_has(reader, "unseen"), 10, "replay to resume")
        assert await run_ids(store) == {"seen", "unseen"}
        assert "unseen" in await feed_runs(store, head)

        # A standby that is down: its reads go to the primary instead, without an error.
        await asyncio.to_thread(pair.stop_standby)
        assert await run_ids(store) == {"seen", "unseen"}
        assert await reader.get_run_metadata_by_run_id("unseen") is not None


async def catalog_has(store: Any, run_id: str) -> bool:
    """Whether the store's catalog (list_runs) shows the run yet."""
    return run_id in await run_ids(store)


async def reader_has(reader: Any, run_id: str) -> bool:
    """Whether ``reader`` (replica_reads=all) sees the run's metadata yet."""
    return await reader.get_run_metadata_by_run_id(run_id) is not None


def config(url: str, **options: Any) -> Any:
    """The parsed configuration of a PostgreSQL store URL."""
    return parse_config(parse_store_url(url), options)


def test_several_hosts_ask_for_the_writer_unless_told() -> None:
    two = "postgresql://u@127.0.0.1:5432,127.0.0.1:5433/db"
    assert "target_session_attrs=read-write" in config(two).dsn
    assert "127.0.0.1:5432,127.0.0.1:5433" in config(two).dsn
    assert "target_session_attrs=primary" in config(two + "?target_session_attrs=primary").dsn
    assert "target_session_attrs" not in config("postgresql://u@127.0.0.1:5432/db").dsn
    for target in ("standby", "prefer-standby", "read-only"):
        with pytest.raises(InvalidInput, match="read_url") as caught:
            config(f"{two}?target_session_attrs={target}")
        assert caught.value.field == "target_session_attrs"


@pytest.mark.parametrize("hosts", ["h1:5432,h2:99999", "h1:5432,h2:abc", "h1,h2:0", "h1,[::1"])
def test_every_host_and_port_is_checked(hosts: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        config(f"postgresql://u:{PASSWORD}@{hosts}/db")
    assert caught.value.field == "url"
    assert PASSWORD not in str(caught.value)


def test_read_url_from_the_url_or_a_keyword() -> None:
    standby = f"postgresql://reader:{PASSWORD}@10.0.0.2:5433,10.0.0.3:5433/db?sslmode=disable"
    for parsed in (
        config(f"postgresql://u:{PASSWORD}@h1/db?read_url={quote(standby, safe='')}"),
        config(f"postgresql://u:{PASSWORD}@h1/db", read_url=standby, replica_reads="all"),
    ):
        assert parsed.read is not None
        assert "10.0.0.2:5433,10.0.0.3:5433" in parsed.read.dsn
        assert "target_session_attrs=prefer-standby" in parsed.read.dsn
        assert parsed.read.schema == parsed.schema
        assert parsed.read.pool_size == parsed.pool_size
        for shown in (parsed.masked_url, parsed.read.masked_url, repr(parsed)):
            assert PASSWORD not in shown
    assert config("postgresql://u@h1/db").read is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"read_url": "mysql://u@h/db"}, "read_url"),
        ({"read_url": "not a url"}, "read_url"),
        ({"read_url": 5}, "read_url"),
        ({"read_url": "postgresql://u@h/db?schema=other"}, "read_url"),
        ({"read_url": "postgresql://u@h:70000/db"}, "url"),
        ({"read_url": "postgresql://u@h/db?sslmode=bogus"}, "sslmode"),
        ({"read_url": "postgresql://u@h/db", "replica_reads": "some"}, "replica_reads"),
    ],
)
def test_bad_read_options_are_refused(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        config(f"postgresql://u:{PASSWORD}@h1/db", **options)
    assert caught.value.field == field
    assert PASSWORD not in str(caught.value)
