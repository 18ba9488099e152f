"""A row no reader can decode is that row's problem, never the whole store's.

Rows like the ones an older version wrote before the datetime range existed (SQLite: an
instant before year 1 in UTC; PostgreSQL: -infinity), or changed outside runstate (a date past
year 9999, JSON that is not an object, an int past the digit limit), on both SQL adapters:
reads of that run raise ``UnreadableRecord`` naming it, store-wide reads skip it and log it,
the relay dead-letters its record and delivers everything else, the CLI lists the other runs.
SQLite: a failed read leaves no snapshot behind.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from conftest import POSTGRES_URL, drop_postgres_schema, require_service, unique_schema
from runstate import RunBootstrapInput, RunEventInput, RunMetadata, RunStateStore, open_store
from runstate.errors import UnreadableRecord
from runstate.relay import Relay
from runstate.relay.metrics import RelayMetrics
from runstate.sinks import CallableSink
from runstate.store import OutboxStore, RunCatalog

GOOD = ("good-1", "good-2")
#: Damaged run -> the seq of its damaged event (None: its metadata is damaged).
DAMAGED: dict[str, int | None] = {
    "bad-created": None,
    "bad-occurred": 2,
    "bad-payload": 1,
    "bad-int": 2,
    "bad-recorded": 3,
}
_US_PER_DAY = 86_400 * 10**6
_YEAR_1_US = -62_135_596_800 * 10**6  # 0001-01-01T00:00Z in microseconds since 1970


@dataclass
class Damaged:
    """A store with good runs and damaged ones, and how to reach it."""

    url: str
    store: RunStateStore


async def _seed(store: RunStateStore) -> None:
    for run_id in (*GOOD, *DAMAGED):
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf", labels={"k": "v"}),
                first_events=[
                    RunEventInput(type="RunQueued", payload={"n": 1}),
                    RunEventInput(type="E", payload={"n": 2}),
                    RunEventInput(type="E", payload={"n": 3}),
                ],
            )
        )


def _damage_sqlite(path: Path) -> None:
    connection = sqlite3.connect(path)
    with connection:
        # What an older version stored for datetime(1, 1, 1, 1, tzinfo=+05:00): year 0 in UTC.
        before_year_1 = _YEAR_1_US - 4 * 3600 * 10**6
        connection.execute(
            "UPDATE runstate_runs SET created_at = ? WHERE run_id = 'bad-created'", (before_year_1,)
        )
        connection.execute(
            "UPDATE runstate_events SET occurred_at = ? WHERE run_id = 'bad-occurred' AND seq = 2",
            (before_year_1,),
        )
        connection.execute(
            "UPDATE runstate_events SET payload = '{\"n\": ' WHERE run_id = 'bad-payload'"
            " AND seq = 1"
        )
        connection.execute(
            "UPDATE runstate_events SET payload = ? WHERE run_id = 'bad-int' AND seq = 2",
            ('{"n": 1' + "0" * 5000 + "}",),
        )
        connection.execute(
            "UPDATE runstate_events SET recorded_at = ? WHERE run_id = 'bad-recorded' AND seq = 3",
            (_YEAR_1_US + 10_000 * 366 * _US_PER_DAY,),
        )
    connection.close()


async def _damage_postgres(schema: str) -> None:
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        # What an older version stored for datetime(1, 1, 1, tzinfo=UTC): -infinity.
        await admin.execute(
            f"UPDATE \"{schema}\".run_metadata SET created_at = '-infinity'"  # noqa: S608
            " WHERE run_id = 'bad-created'"
        )
        await admin.execute(
            f"UPDATE \"{schema}\".run_events SET occurred_at = 'infinity'"  # noqa: S608
            " WHERE run_id = 'bad-occurred' AND seq = 2"
        )
        await admin.execute(
            f"UPDATE \"{schema}\".run_events SET payload = '[1, 2]'"  # noqa: S608
            " WHERE run_id = 'bad-payload' AND seq = 1"
        )
        await admin.execute(
            f'UPDATE "{schema}".run_events SET payload = $1::json'  # noqa: S608
            " WHERE run_id = 'bad-int' AND seq = 2",
            '{"n": 1' + "0" * 5000 + "}",
        )
        # A date no Python datetime holds: the driver fails the whole result on it.
        await admin.execute(
            f"UPDATE \"{schema}\".run_events SET recorded_at = '10000-01-01'"  # noqa: S608
            " WHERE run_id = 'bad-recorded' AND seq = 3"
        )
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def damaged(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Damaged]:
    if request.param == "sqlite":
        path = tmp_path / "damaged.db"
        url = f"sqlite:///{path}"
        async with open_store(url) as seeding:
            await _seed(seeding)
        _damage_sqlite(path)
        schema = None
    else:
        require_service("PostgreSQL", "127.0.0.1", 5432)
        schema = unique_schema()
        url = f"{POSTGRES_URL}?schema={schema}"
        async with open_store(url, pool_size=2) as seeding:
            await _seed(seeding)
        await _damage_postgres(schema)
    store = await open_store(url)
    try:
        yield Damaged(url=url, store=store)
    finally:
        await store.close()
        if schema is not None:
            await drop_postgres_schema(schema)


async def test_a_runs_own_reads_name_the_damaged_row(damaged: Damaged) -> None:
    store = damaged.store
    for run_id in GOOD:
        assert len(await store.list_events(run_id)) == 3
    for run_id, seq in DAMAGED.items():
        if seq is None:
            with pytest.raises(UnreadableRecord) as caught:
                await store.get_run_metadata_by_run_id(run_id)
            assert caught.value.code == "UNREADABLE_RECORD"
            assert len(await store.list_events(run_id)) == 3
        else:
            with pytest.raises(UnreadableRecord) as caught:
                await store.list_events(run_id)
            assert await store.list_events(run_id, limit=seq - 1) is not None
            assert await store.get_run_metadata_by_run_id(run_id) is not None
        assert (caught.value.run_id, caught.value.seq) == (run_id, seq)
        assert run_id in str(caught.value)


async def test_store_wide_reads_skip_the_damaged_rows_and_report_them(
    damaged: Damaged, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runstate.store")
    catalog = damaged.store
    assert isinstance(catalog, RunCatalog)
    listed = {summary.metadata.run_id for summary in await catalog.list_runs(limit=100)}
    # The list reads each run's summary, written with its events: damage done to an event row
    # afterwards does not reach it (reading that run's events reports it); bad-created's own
    # metadata row is damaged, so it is the one left out and reported.
    assert listed == {*GOOD, "bad-occurred", "bad-payload", "bad-int", "bad-recorded"}
    assert "bad-created" in caplog.text
    assert "UNREADABLE_RECORD" in caplog.text
    seen: list[tuple[str, int]] = []
    cursor = None
    for _ in range(20):
        page = await catalog.read_feed(cursor=cursor, limit=4)
        seen += [(e.run_id, e.seq) for e in page.events]
        if page.cursor == cursor:
            break
        cursor = page.cursor
    expected = {(run_id, seq) for run_id in (*GOOD, *DAMAGED) for seq in (1, 2, 3)}
    expected -= {(run_id, seq) for run_id, seq in DAMAGED.items() if seq is not None}
    assert set(seen) == expected
    assert (await catalog.read_feed(cursor=cursor)).events == ()


async def test_the_relay_dead_letters_the_damaged_records_and_delivers_the_rest(
    damaged: Damaged,
) -> None:
    store = damaged.store
    assert isinstance(store, OutboxStore)
    delivered: list[tuple[str, int]] = []

    async def collect(event: dict[str, Any]) -> None:
        delivered.append((event["subject"], event["seq"]))

    relay = Relay(store, CallableSink(collect), metrics=RelayMetrics(export=False))
    await relay.run_once()
    want = [(run_id, seq) for run_id in (*GOOD, *DAMAGED) for seq in (1, 2, 3)]
    # A run's records after its damaged one wait behind the dead letter, in order.
    want = [
        (run_id, seq)
        for run_id, seq in want
        if DAMAGED.get(run_id) is None or seq < DAMAGED[run_id]  # type: ignore[operator]
    ]
    assert sorted(delivered) == sorted(want)
    stats = await store.outbox_stats()
    assert stats.dead == sum(1 for seq in DAMAGED.values() if seq is not None)
    assert stats.oldest_pending_at is None or stats.oldest_pending_at.year >= 2000


def test_runs_list_lists_the_other_runs_and_names_the_damaged_ones(damaged: Damaged) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "runstate.cli", "runs", "list", "--url", damaged.url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    import json

    listed = {row["run_id"] for row in json.loads(result.stdout)}
    # The list reads the runs' summaries (see above): only the damaged metadata row is named.
    assert listed == {*GOOD, "bad-occurred", "bad-payload", "bad-int", "bad-recorded"}
    assert "bad-created" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_failed_sqlite_read_leaves_no_snapshot_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'snapshot.db'}"
    reader = await open_store(url)
    writer = await open_store(url)
    try:
        await _seed(writer)
        _damage_sqlite(tmp_path / "snapshot.db")
        failure: BaseException | None = None
        try:
            await reader.list_events("bad-occurred")
        except Exception as exc:  # checked below, after what matters most
            failure = exc
        for index in range(21):
            await writer.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=f"later-{index}", workflow="wf"),
                    first_events=[RunEventInput(type="RunQueued")],
                )
            )
            # Acknowledged by the writer, so visible to every reader from now on.
            assert await reader.get_run_metadata_by_run_id(f"later-{index}") is not None
            assert len(await reader.list_events(f"later-{index}")) == 1
        assert isinstance(failure, UnreadableRecord)
    finally:
        await reader.close()
        await writer.close()
        await asyncio.sleep(0)
