"""What only the SQLite adapter does: files, pragmas, migrations, locks, several processes."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import sqlite3
import stat
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from runstate import (
    InvalidInput,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    RunStateStore,
    StoreUnavailable,
    open_store,
)
from runstate.adapters._sql import latest_version, load_migrations, load_sql
from runstate.adapters.sqlite import SQLiteStore, applied_version, migrate
from runstate.adapters.sqlite import _store as sqlite_adapter
from runstate.adapters.sqlite._migrate import split_statements
from runstate.testing.contract import bootstrap_input


def url_of(path: Path) -> str:
    """Return the sqlite:// URL of an absolute path."""
    return f"sqlite:///{path}"


def bootstrap(run_id: str) -> RunBootstrapInput:
    """A one-event bootstrap of ``run_id``."""
    return RunBootstrapInput(
        metadata=RunMetadata(run_id=run_id, workflow="wf"),
        first_events=[RunEventInput(type="RunQueued")],
    )


async def pragma(store: RunStateStore, name: str) -> Any:
    """Read a pragma on the store's write connection."""
    assert isinstance(store, SQLiteStore)

    def read(connection: sqlite3.Connection) -> Any:
        return connection.execute(f"PRAGMA {name}").fetchone()[0]

    return await store._writer.call(read)


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Hold the database's write lock from a plain connection."""
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")


# -- several processes -----------------------------------------------------------------------

_APPENDER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from runstate import RunEventInput, open_store

    async def main(url, run_id, name, count, go):
        async with open_store(url) as store:
            open(go + "-ready-" + name, "w").close()
            while not os.path.exists(go):
                time.sleep(0.005)
            for n in range(count):
                await store.append_and_enqueue_tx(
                    run_id, [RunEventInput(type="Step", payload={"proc": name, "n": n})]
                )

    url, run_id, name, count, go = sys.argv[1:]
    asyncio.run(main(url, run_id, name, int(count), go))
    """
)


def _ready(go: Path, *names: str) -> bool:
    return all(Path(f"{go}-ready-{name}").exists() for name in names)


async def test_two_processes_append_to_one_run_with_gapless_seqs(tmp_path: Path) -> None:
    database = tmp_path / "shared.db"
    go = tmp_path / "go"
    count = 60
    async with open_store(url_of(database), synchronous="NORMAL") as store:
        await store.bootstrap_run_tx(bootstrap("shared-run"))
        processes = [
            await asyncio.create_subprocess_exec(
                *(sys.executable, "-c", _APPENDER, url_of(database), "shared-run", name),
                *(str(count), str(go)),
            )
            for name in ("a", "b")
        ]
        try:
            # Start both at once, when both have the store open, so that their appends overlap.
            for _ in range(6000):
                if _ready(go, "a", "b"):
                    break
                await asyncio.sleep(0.01)
            go.touch()
            codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), 120)
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        assert codes == [0, 0]
        events = await store.list_events("shared-run")
    assert [e.seq for e in events] == list(range(1, 2 * count + 2))
    positions = [e.position for e in events]
    assert positions == sorted(set(positions))
    for name in ("a", "b"):
        assert [e.payload["n"] for e in events if e.payload.get("proc") == name] == list(
            range(count)
        )


# -- schema and migrations -------------------------------------------------------------------


def _normalized_schema(connection: sqlite3.Connection) -> list[tuple[str, str, str]]:
    rows = connection.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    result = []
    for kind, name, sql in rows:
        text = re.sub(r"--[^\n]*", "", sql or "")
        # ALTER TABLE ADD COLUMN appends ", column ..." before the closing parenthesis,
        # after whatever space ended the last column: spacing around commas is not schema.
        text = re.sub(r"\s*,\s*", ", ", " ".join(text.split())).replace(" )", ")")
        result.append((kind, name, text))
    return result


async def test_migrations_produce_schema_sql(tmp_path: Path) -> None:
    migrated = tmp_path / "migrated.db"
    async with open_store(url_of(migrated)):
        pass
    canonical = tmp_path / "canonical.db"
    with closing(sqlite3.connect(migrated)) as a, closing(sqlite3.connect(canonical)) as b:
        b.executescript(load_sql("sqlite", "schema.sql"))
        assert _normalized_schema(a) == _normalized_schema(b)
        assert _normalized_schema(a)  # not two empty schemas
        versions = a.execute("SELECT version, name FROM runstate_schema_version").fetchall()
    assert versions == [(m.version, m.name) for m in load_migrations("sqlite")]


def test_migration_scripts_split_into_statements() -> None:
    for migration in load_migrations("sqlite"):
        statements = split_statements(migration.sql)
        assert statements
        assert all(sqlite3.complete_statement(s) for s in statements)
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE x (a);\nCREATE TABLE y (b)")


async def test_reopening_does_not_migrate_again(tmp_path: Path) -> None:
    database = tmp_path / "reopen.db"
    assert await applied_version(url_of(database)) == 0
    assert not database.exists()
    async with open_store(url_of(database)) as store:
        await store.bootstrap_run_tx(bootstrap("kept"))
    with closing(sqlite3.connect(database)) as connection:
        before = connection.execute("SELECT * FROM runstate_schema_version").fetchall()
    async with open_store(url_of(database)) as store:
        assert await store.get_run_metadata_by_run_id("kept") is not None
    with closing(sqlite3.connect(database)) as connection:
        after = connection.execute("SELECT * FROM runstate_schema_version").fetchall()
    assert after == before
    assert await applied_version(url_of(database)) == latest_version("sqlite")
    latest = latest_version("sqlite")
    assert await migrate(url_of(database)) == (latest, latest)


async def test_migrate_creates_a_new_database(tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "new.db"
    assert await migrate(url_of(database)) == (0, latest_version("sqlite"))
    assert await applied_version(url_of(database)) == latest_version("sqlite")


async def test_database_from_a_newer_runstate_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "newer.db"
    await migrate(url_of(database))
    with closing(sqlite3.connect(database)) as connection, connection:
        connection.execute(
            "INSERT INTO runstate_schema_version (version, name, applied_at) VALUES (999, 'x', 0)"
        )
    with pytest.raises(StoreUnavailable, match="newer") as caught:
        await open_store(url_of(database))
    assert not caught.value.retryable


# -- pragmas and options ---------------------------------------------------------------------


async def test_default_pragmas(tmp_path: Path) -> None:
    async with open_store(url_of(tmp_path / "p.db")) as store:
        assert await pragma(store, "synchronous") == 2  # FULL
        assert await pragma(store, "journal_mode") == "wal"
        assert await pragma(store, "foreign_keys") == 1
        assert await pragma(store, "busy_timeout") == 5000


@pytest.mark.parametrize(
    ("suffix", "options"),
    [("", {"synchronous": "NORMAL"}), ("?synchronous=normal", {}), ("", {"synchronous": "normal"})],
)
async def test_synchronous_normal(tmp_path: Path, suffix: str, options: dict[str, Any]) -> None:
    async with open_store(url_of(tmp_path / "n.db") + suffix, **options) as store:
        assert await pragma(store, "synchronous") == 1  # NORMAL


async def test_busy_timeout_and_payload_limit_from_url(tmp_path: Path) -> None:
    url = url_of(tmp_path / "q.db") + "?busy_timeout=0.25&max_payload_bytes=50"
    async with open_store(url) as store:
        assert await pragma(store, "busy_timeout") == 250
        await store.bootstrap_run_tx(bootstrap("small"))
        with pytest.raises(InvalidInput, match="50"):
            await store.append_and_enqueue_tx(
                "small", [RunEventInput(type="T", payload={"v": "x" * 100})]
            )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pool_size": 3}, "supported: busy_timeout, max_payload_bytes, synchronous"),
        ({"synchronous": "OFF"}, "FULL, NORMAL"),
        ({"busy_timeout": -1}, "non-negative"),
        ({"busy_timeout": "soon"}, "seconds"),
        ({"max_payload_bytes": 0}, "positive"),
    ],
)
async def test_bad_options_are_refused(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        await open_store(url_of(tmp_path / "o.db"), **options)
    assert not (tmp_path / "o.db").exists()


# -- paths -----------------------------------------------------------------------------------


async def test_relative_paths_are_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url, expected in [
        ("sqlite:///./dot.db", tmp_path / "dot.db"),
        ("sqlite:///nested/dir/x.db", tmp_path / "nested" / "dir" / "x.db"),
        ("sqlite:///with%20space.db", tmp_path / "with space.db"),
    ]:
        async with open_store(url) as store:
            assert isinstance(store, SQLiteStore)
            assert store.path == str(expected)
        assert expected.is_file()


async def test_absolute_path_with_four_slashes(tmp_path: Path) -> None:
    database = tmp_path / "abs.db"
    async with open_store("sqlite:///" + str(database)) as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(database)
    assert str(database).startswith("/")


@pytest.mark.parametrize(
    "url", ["sqlite:///:memory:", "sqlite://", "sqlite:///", "sqlite:///x.db?mode=memory"]
)
async def test_in_memory_databases_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="memory://"):
        await open_store(url)


async def test_host_in_url_is_refused() -> None:
    with pytest.raises(InvalidInput, match="host"):
        await open_store("sqlite://somehost/x.db")


async def test_uri_filenames_are_refused() -> None:
    with pytest.raises(InvalidInput, match="URI filenames"):
        await open_store("sqlite:///file:x.db")


async def test_new_file_is_private(tmp_path: Path) -> None:
    database = tmp_path / "private.db"
    async with open_store(url_of(database)) as store:
        await store.bootstrap_run_tx(bootstrap("r"))
        for path in (database, Path(f"{database}-wal")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_directory_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=re.escape(str(tmp_path))):
        await open_store(url_of(tmp_path))


async def test_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "notes.db"
    database.write_text("these are not the pages you are looking for\n" * 100)
    with pytest.raises(InvalidInput, match=re.escape(str(database))):
        await open_store(url_of(database))
    assert database.read_text().startswith("these are not")


async def test_parent_that_is_a_file_gives_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    database = blocker / "x.db"
    with pytest.raises(StoreUnavailable, match=re.escape(str(database))) as caught:
        await open_store(url_of(database))
    assert not caught.value.retryable


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
async def test_unwritable_folder_gives_store_unavailable(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(StoreUnavailable, match=re.escape(str(folder))):
            await open_store(url_of(folder / "x.db"))
    finally:
        folder.chmod(0o700)


# -- locks, the event loop, closing ------------------------------------------------------------


async def test_locked_database_past_busy_timeout(tmp_path: Path) -> None:
    database = tmp_path / "locked.db"
    async with open_store(url_of(database), busy_timeout=0.2) as store:
        await store.bootstrap_run_tx(bootstrap("r"))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        try:
            with write_lock(database):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match="locked") as caught:
                    await store.append_and_enqueue_tx("r", [RunEventInput(type="T")])
                waited = time.monotonic() - started
                # Reads go on while another process holds the write lock (WAL).
                assert len(await store.list_events("r")) == 1
        finally:
            ticking.cancel()
        assert str(database) in str(caught.value)
        assert caught.value.retryable
        assert waited >= 0.15
        # The loop kept running while the writer thread waited for the lock.
        assert ticks >= 5
        result = await store.append_and_enqueue_tx("r", [RunEventInput(type="T")])
        assert result.last_seq == 2


async def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = await open_store(url_of(tmp_path / "c.db"))
    await store.close()
    await store.close()
    with pytest.raises(InvalidInput, match="closed"):
        await store.list_events("r")
    with pytest.raises(InvalidInput, match="closed"):
        await store.bootstrap_run_tx(bootstrap("r"))


async def test_close_waits_for_queued_writes(tmp_path: Path) -> None:
    url = url_of(tmp_path / "w.db")
    store = await open_store(url)
    writes = [asyncio.ensure_future(store.bootstrap_run_tx(bootstrap(f"r{i}"))) for i in range(20)]
    await asyncio.sleep(0)
    await store.close()
    await asyncio.gather(*writes)
    async with open_store(url) as reopened:
        for i in range(20):
            assert await reopened.get_run_metadata_by_run_id(f"r{i}") is not None


async def test_wait_for_outbox_sees_commits_of_other_connections(tmp_path: Path) -> None:
    database = tmp_path / "poll.db"
    async with open_store(url_of(database)) as store:
        assert isinstance(store, SQLiteStore)
        await store.bootstrap_run_tx(bootstrap("r"))
        waiter = asyncio.create_task(store.wait_for_outbox(10.0))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        loop = asyncio.get_running_loop()
        started = loop.time()

        def commit_elsewhere() -> None:
            # A plain connection, like another process: no in-process wake-up, only the poll.
            with closing(sqlite3.connect(database, isolation_level=None)) as other:
                other.execute('UPDATE runstate_runs SET labels = \'{"k": "v"}\'')

        await asyncio.to_thread(commit_elsewhere)
        await asyncio.wait_for(waiter, 2.0)
        assert loop.time() - started < 1.0
        started = loop.time()
        await store.wait_for_outbox(0.12)
        assert loop.time() - started >= 0.1


async def test_writes_wake_waiters_of_other_stores_in_this_process(tmp_path: Path) -> None:
    url = url_of(tmp_path / "wake.db")
    async with open_store(url) as relay_side, open_store(url) as writer_side:
        assert isinstance(relay_side, SQLiteStore)
        waiter = asyncio.create_task(relay_side.wait_for_outbox(10.0))
        await asyncio.sleep(0.02)
        started = time.monotonic()
        await writer_side.bootstrap_run_tx(bootstrap("r"))
        await asyncio.wait_for(waiter, 2.0)
        assert time.monotonic() - started < 0.04
    assert not sqlite_adapter._waiters


async def test_unclosed_store_stops_its_threads(tmp_path: Path) -> None:
    def count() -> int:
        return sum(t.name.startswith("runstate-sqlite") for t in threading.enumerate())

    before = count()
    store = await open_store(url_of(tmp_path / "leak.db"))
    assert count() == before + 2
    del store
    gc.collect()
    for _ in range(100):
        if count() == before:
            break
        await asyncio.sleep(0.01)
    assert count() == before


async def _pending_runs(path: Path, runs: int) -> None:
    # Concurrent bootstraps share group commits: thousands of runs in well under a second.
    async with open_store(url_of(path)) as store:
        for start in range(0, runs, 1000):
            await asyncio.gather(
                *(
                    store.bootstrap_run_tx(bootstrap_input(f"run-{index:06d}"))
                    for index in range(start, min(runs, start + 1000))
                )
            )


def _claim_steps(path: Path) -> tuple[int, int]:
    """SQLite VM steps (in hundreds) and records of one claim of 100, rolled back."""
    from runstate.adapters.sqlite._outbox import claim

    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.set_progress_handler(count, 100)
        claimed = claim(connection, "owner", 100, 30.0)
        connection.set_progress_handler(None, 0)
        connection.execute("ROLLBACK")
    finally:
        connection.close()
    return steps[0], len(claimed)


async def test_a_claim_reads_the_runs_it_takes_not_the_whole_backlog(tmp_path: Path) -> None:
    # A claim used to group every undelivered record by run to find the oldest heads: about
    # 100 ms with 100,000 runs waiting, all of it holding the writer. It now walks heads oldest
    # first and stops when the batch is full. VM steps, not seconds: the same on any machine.
    small, large = tmp_path / "small.db", tmp_path / "large.db"
    await _pending_runs(small, 200)
    await _pending_runs(large, 10_000)
    small_steps, small_claimed = _claim_steps(small)
    large_steps, large_claimed = _claim_steps(large)
    assert small_claimed == large_claimed == 100
    # 50 times the backlog; the old query cost about 50 times the steps.
    assert large_steps < 2 * small_steps, (small_steps, large_steps)
