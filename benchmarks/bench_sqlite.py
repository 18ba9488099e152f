"""sqlite:// throughput next to plain sqlite3 (the ceiling) and eventsourcing's SQLite recorder.

Run: ``python benchmarks/bench_sqlite.py [--operations N] [--rounds R] [--modes FULL,NORMAL]``.

One writer, each call awaited before the next, as the ceiling is measured:

- runstate: ``bootstrap_run_tx`` (metadata + [RunQueued, RunStarted] + 2 outbox records) and
  single-event ``append_and_enqueue_tx`` (event + outbox record) round-robin over 100 runs,
  through the public API: validation, the writer-thread hop, result objects;
- sqlite3 ceiling: the very statements the adapter runs, on the same schema and pragmas,
  called synchronously in a loop with one ``BEGIN IMMEDIATE ... COMMIT`` per operation and
  nothing around them but ``json.dumps`` and a timestamp: no validation, no thread, no results;
- eventsourcing 9.5.6: ``SQLiteApplicationRecorder.insert_events`` with two events per
  bootstrap and one per append, its connections set to the same ``synchronous`` mode.

Inputs are built before each timed loop. Every round uses fresh database files and rotates
the order of the three contenders; the table shows medians over the rounds. The last column,
outside the ratios, is runstate with ``--tasks`` concurrent writer tasks on one store: the
same work, with the thread hop of one call overlapping the transaction of another.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import median_rate, print_table, timed_rate, timed_rate_async
from runstate import RunBootstrapInput, RunEventInput, RunMetadata, open_store
from runstate._migrations import load_sql
from runstate.adapters._sqlite_conn import to_us
from runstate.adapters._sqlite_ops import Q

RUNS_FOR_APPENDS = 100
Rates = tuple[float, float]


def _bootstraps(operations: int) -> list[RunBootstrapInput]:
    return [
        RunBootstrapInput(
            metadata=RunMetadata(run_id=f"run-{i}", workflow="bench", input={"n": i}),
            first_events=[
                RunEventInput(type="RunQueued", payload={"queue": "default"}),
                RunEventInput(type="RunStarted", payload={"worker": "w-1"}),
            ],
        )
        for i in range(operations)
    ]


def _appends(operations: int) -> list[tuple[str, list[RunEventInput]]]:
    return [
        (f"run-{i % RUNS_FOR_APPENDS}", [RunEventInput(type="StepStarted", payload={"step": i})])
        for i in range(operations)
    ]


async def _runstate(path: Path, mode: str, operations: int) -> Rates:
    bootstraps = _bootstraps(operations)
    appends = _appends(operations)
    async with open_store(f"sqlite:///{path}", synchronous=mode) as store:

        async def boot() -> None:
            for item in bootstraps:
                await store.bootstrap_run_tx(item)

        async def append() -> None:
            for run_id, events in appends:
                await store.append_and_enqueue_tx(run_id, events)

        return (
            await timed_rate_async(operations, boot),
            await timed_rate_async(operations, append),
        )


def runstate_rates(path: Path, mode: str, operations: int) -> Rates:
    """runstate through ``open_store``: bootstraps/s and appends/s."""
    return asyncio.run(_runstate(path, mode, operations))


async def _runstate_concurrent(path: Path, mode: str, operations: int, tasks: int) -> Rates:
    bootstraps = _bootstraps(operations)
    appends = _appends(operations)
    async with open_store(f"sqlite:///{path}", synchronous=mode) as store:

        async def boot() -> None:
            async def worker(index: int) -> None:
                for item in bootstraps[index::tasks]:
                    await store.bootstrap_run_tx(item)

            await asyncio.gather(*(worker(i) for i in range(tasks)))

        async def append() -> None:
            # Task i appends to runs i, i + tasks, ...: each run's events stay in order.
            async def worker(index: int) -> None:
                for run_id, events in appends:
                    if int(run_id.rsplit("-", 1)[1]) % tasks == index:
                        await store.append_and_enqueue_tx(run_id, events)

            await asyncio.gather(*(worker(i) for i in range(tasks)))

        return (
            await timed_rate_async(operations, boot),
            await timed_rate_async(operations, append),
        )


def runstate_concurrent_rates(path: Path, mode: str, operations: int, tasks: int) -> Rates:
    """runstate with ``tasks`` concurrent writer tasks on one store (not in the ratios)."""
    return asyncio.run(_runstate_concurrent(path, mode, operations, tasks))


def ceiling_rates(path: Path, mode: str, operations: int) -> Rates:
    """The adapter's statements on plain sqlite3, one synchronous transaction per operation."""
    connection = sqlite3.connect(path, isolation_level=None, cached_statements=256)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={mode}")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.executescript(load_sql("sqlite", "schema.sql"))
    execute = connection.execute
    insert_run, insert_event, insert_outbox = Q["insert_run"], Q["insert_event"], Q["insert_outbox"]
    select_head, update_last_seq = Q["select_run_head"], Q["update_last_seq"]
    dumps = json.dumps
    bootstraps = _bootstraps(operations)
    appends = _appends(operations)

    def boot() -> None:
        for item in bootstraps:
            metadata = item.metadata
            now = to_us(datetime.now(UTC))
            run_row = (metadata.run_id, metadata.workflow, None, None, None)
            created = to_us(metadata.created_at)
            execute("BEGIN IMMEDIATE")
            execute(insert_run, (*run_row, dumps(metadata.input), "{}", created, 1, 2))
            for seq, event in enumerate(item.first_events, 1):
                row = (metadata.run_id, seq, event.event_id, event.type, dumps(event.payload))
                position = execute(insert_event, (*row, 1, None, now)).lastrowid
                execute(insert_outbox, (position, metadata.run_id, seq))
            execute("COMMIT")

    def append() -> None:
        for run_id, events in appends:
            (event,) = events
            now = to_us(datetime.now(UTC))
            execute("BEGIN IMMEDIATE")
            seq = execute(select_head, (run_id,)).fetchone()[1] + 1
            row = (run_id, seq, event.event_id, event.type, dumps(event.payload), 1, None, now)
            position = execute(insert_event, row).lastrowid
            execute(insert_outbox, (position, run_id, seq))
            execute(update_last_seq, (seq, run_id))
            execute("COMMIT")

    try:
        return timed_rate(operations, boot), timed_rate(operations, append)
    finally:
        connection.close()


def eventsourcing_rates(path: Path, mode: str, operations: int) -> Rates | None:
    """The same work on eventsourcing's SQLiteApplicationRecorder, if installed."""
    try:
        from eventsourcing.persistence import StoredEvent
        from eventsourcing.sqlite import (
            SQLiteApplicationRecorder,
            SQLiteConnection,
            SQLiteConnectionPool,
            SQLiteDatastore,
        )
    except ImportError:
        return None

    class Pool(SQLiteConnectionPool):
        """eventsourcing's pool, with this run's ``synchronous`` mode on every connection."""

        def _create_connection(self) -> SQLiteConnection:
            connection = super()._create_connection()
            connection._sqlite_conn.execute(f"PRAGMA synchronous={mode}")
            return connection

    datastore = SQLiteDatastore(str(path))
    datastore.pool.__class__ = Pool
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()
    ids = [uuid.uuid4() for _ in range(operations)]
    pairs = [
        [
            StoredEvent(originator_id=i, originator_version=1, topic="RunQueued", state=b"{}"),
            StoredEvent(originator_id=i, originator_version=2, topic="RunStarted", state=b"{}"),
        ]
        for i in ids
    ]
    singles = [
        [
            StoredEvent(
                originator_id=ids[i % RUNS_FOR_APPENDS],
                originator_version=3 + i // RUNS_FOR_APPENDS,
                topic="StepStarted",
                state=b'{"step":%d}' % i,
            )
        ]
        for i in range(operations)
    ]

    def boot() -> None:
        for pair in pairs:
            recorder.insert_events(pair)

    def append() -> None:
        for single in singles:
            recorder.insert_events(single)

    try:
        return timed_rate(operations, boot), timed_rate(operations, append)
    finally:
        datastore.close()


Contender = Callable[[Path, str, int], Rates | None]
CONTENDERS: list[tuple[str, Contender]] = [
    ("runstate", runstate_rates),
    ("sqlite3 ceiling", ceiling_rates),
    ("eventsourcing", eventsourcing_rates),
]


def _ratio(ours: list[float], theirs: list[float]) -> object:
    return median_rate(ours) / median_rate(theirs) if theirs and ours else "n/a"


def _median(samples: list[float]) -> object:
    return median_rate(samples) if samples else "n/a"


def main() -> None:
    """Measure every contender at every synchronous mode; print medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", type=int, default=2_000, help="per timed loop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="FULL,NORMAL", help="synchronous modes to compare")
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go")
    parser.add_argument(
        "--tasks", type=int, default=16, help="concurrent tasks for the extra runstate row; 0: off"
    )
    args = parser.parse_args()
    modes = [mode.strip().upper() for mode in args.modes.split(",") if mode.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="bench-sqlite-", dir=args.dir))
    try:
        for mode in modes:
            boots: dict[str, list[float]] = {name: [] for name, _ in CONTENDERS}
            appends: dict[str, list[float]] = {name: [] for name, _ in CONTENDERS}
            concurrent: tuple[list[float], list[float]] = ([], [])
            for round_ in range(args.rounds):
                shift = round_ % len(CONTENDERS)
                for name, contender in CONTENDERS[shift:] + CONTENDERS[:shift]:
                    path = workdir / f"{name.split()[0]}-{mode}-{round_}.db"
                    rates = contender(path, mode, args.operations)
                    if rates is not None:
                        boots[name].append(rates[0])
                        appends[name].append(rates[1])
                if args.tasks > 0:
                    path = workdir / f"concurrent-{mode}-{round_}.db"
                    rates = runstate_concurrent_rates(path, mode, args.operations, args.tasks)
                    concurrent[0].append(rates[0])
                    concurrent[1].append(rates[1])
            rows: list[list[object]] = []
            for label, samples, parallel in (
                ("bootstraps/s (2 events)", boots, concurrent[0]),
                ("appends/s (1 event)", appends, concurrent[1]),
            ):
                ours = samples["runstate"]
                rows.append(
                    [
                        label,
                        _median(ours),
                        _median(samples["sqlite3 ceiling"]),
                        _median(samples["eventsourcing"]),
                        _ratio(ours, samples["sqlite3 ceiling"]),
                        _ratio(ours, samples["eventsourcing"]),
                        _median(parallel),
                    ]
                )
            print_table(
                f"sqlite:// synchronous={mode} — median of {args.rounds} rounds "
                f"x {args.operations} operations, one writer awaiting each call",
                [
                    "operation",
                    "runstate",
                    "sqlite3",
                    "eventsourcing",
                    "vs sqlite3",
                    "vs es",
                    f"runstate x{args.tasks} tasks",
                ],
                rows,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
