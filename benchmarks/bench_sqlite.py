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
the order of the contenders; the tables show medians over the rounds.

The second table is the same work split over ``--tasks`` concurrent writers: runstate tasks on
one store (its writer thread commits the calls that queue up together, one fsync for the
group), plain sqlite3 with one thread and one connection per writer (each ``BEGIN IMMEDIATE``
waits for the file's write lock, one fsync per operation), and eventsourcing with as many
threads and a pool of as many connections.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import shutil
import sqlite3
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import median_rate, print_table, timed_rate, timed_rate_async
from runstate import RunBootstrapInput, RunEventInput, RunMetadata, open_store
from runstate.adapters._sql import load_sql
from runstate.adapters.sqlite._connect import to_us
from runstate.adapters.sqlite._queries import Q

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
            async def worker(share: list[tuple[str, list[RunEventInput]]]) -> None:
                for run_id, events in share:
                    await store.append_and_enqueue_tx(run_id, events)

            await asyncio.gather(*(worker(share) for share in _task_appends(appends, tasks)))

        return (
            await timed_rate_async(operations, boot),
            await timed_rate_async(operations, append),
        )


def runstate_concurrent_rates(path: Path, mode: str, operations: int, tasks: int) -> Rates:
    """runstate with ``tasks`` concurrent writer tasks on one store."""
    return asyncio.run(_runstate_concurrent(path, mode, operations, tasks))


def _ceiling_connection(path: Path, mode: str) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path, isolation_level=None, cached_statements=256, check_same_thread=False, timeout=30
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={mode}")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def _ceiling_boot(connection: sqlite3.Connection, bootstraps: Sequence[RunBootstrapInput]) -> None:
    execute = connection.execute
    insert_run, insert_event, insert_outbox = Q["insert_run"], Q["insert_event"], Q["insert_outbox"]
    dumps = json.dumps
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


def _ceiling_append(
    connection: sqlite3.Connection, appends: Sequence[tuple[str, list[RunEventInput]]]
) -> None:
    execute = connection.execute
    insert_event, insert_outbox = Q["insert_event"], Q["insert_outbox"]
    select_head, update_last_seq = Q["select_run_head"], Q["update_last_seq"]
    dumps = json.dumps
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


def ceiling_rates(path: Path, mode: str, operations: int) -> Rates:
    """The adapter's statements on plain sqlite3, one synchronous transaction per operation."""
    connection = _ceiling_connection(path, mode)
    connection.executescript(load_sql("sqlite", "schema.sql"))
    bootstraps = _bootstraps(operations)
    appends = _appends(operations)
    try:
        return (
            timed_rate(operations, lambda: _ceiling_boot(connection, bootstraps)),
            timed_rate(operations, lambda: _ceiling_append(connection, appends)),
        )
    finally:
        connection.close()


def _in_threads(jobs: Sequence[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _task_appends(
    appends: Sequence[tuple[str, list[RunEventInput]]], tasks: int
) -> list[list[tuple[str, list[RunEventInput]]]]:
    """Writer i appends to runs i, i + tasks, ...: each run's events stay in order."""
    shares: list[list[tuple[str, list[RunEventInput]]]] = [[] for _ in range(tasks)]
    for run_id, events in appends:
        shares[int(run_id.rsplit("-", 1)[1]) % tasks].append((run_id, events))
    return shares


def ceiling_concurrent_rates(path: Path, mode: str, operations: int, tasks: int) -> Rates:
    """Plain sqlite3 with ``tasks`` threads, one connection each, on one database file."""
    setup = _ceiling_connection(path, mode)
    setup.executescript(load_sql("sqlite", "schema.sql"))
    setup.close()
    connections = [_ceiling_connection(path, mode) for _ in range(tasks)]
    bootstraps = _bootstraps(operations)
    appends = _task_appends(_appends(operations), tasks)
    try:
        boot_jobs = [
            (lambda c=c, i=i: _ceiling_boot(c, bootstraps[i::tasks]))
            for i, c in enumerate(connections)
        ]
        append_jobs = [
            (lambda c=c, i=i: _ceiling_append(c, appends[i])) for i, c in enumerate(connections)
        ]
        return (
            timed_rate(operations, lambda: _in_threads(boot_jobs)),
            timed_rate(operations, lambda: _in_threads(append_jobs)),
        )
    finally:
        for connection in connections:
            connection.close()


def eventsourcing_rates(path: Path, mode: str, operations: int, tasks: int = 1) -> Rates | None:
    """The same work on eventsourcing's SQLiteApplicationRecorder, in ``tasks`` threads."""
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

    datastore = SQLiteDatastore(str(path), pool_size=tasks, lock_timeout=30, pool_timeout=30)
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
        (
            f"run-{i % RUNS_FOR_APPENDS}",
            [
                StoredEvent(
                    originator_id=ids[i % RUNS_FOR_APPENDS],
                    originator_version=3 + i // RUNS_FOR_APPENDS,
                    topic="StepStarted",
                    state=b'{"step":%d}' % i,
                )
            ],
        )
        for i in range(operations)
    ]
    shares = _task_appends(singles, tasks)  # type: ignore[arg-type]

    def boot(index: int) -> None:
        for pair in pairs[index::tasks]:
            recorder.insert_events(pair)

    def append(index: int) -> None:
        for _, single in shares[index]:
            recorder.insert_events(single)  # type: ignore[arg-type]

    def split(work: Callable[[int], None]) -> Callable[[], None]:
        if tasks == 1:
            return lambda: work(0)
        return lambda: _in_threads([functools.partial(work, i) for i in range(tasks)])

    try:
        return timed_rate(operations, split(boot)), timed_rate(operations, split(append))
    finally:
        datastore.close()


Contender = Callable[[Path, str, int], Rates | None]
ConcurrentContender = Callable[[Path, str, int, int], Rates | None]
CONTENDERS: list[tuple[str, Contender]] = [
    ("runstate", runstate_rates),
    ("sqlite3", ceiling_rates),
    ("eventsourcing", eventsourcing_rates),
]
CONCURRENT: list[tuple[str, ConcurrentContender]] = [
    ("runstate", runstate_concurrent_rates),
    ("sqlite3", ceiling_concurrent_rates),
    ("eventsourcing", eventsourcing_rates),
]
LABELS = ("bootstraps/s (2 events)", "appends/s (1 event)")


def _ratio(ours: list[float], theirs: list[float]) -> object:
    return median_rate(ours) / median_rate(theirs) if theirs and ours else "n/a"


def _median(samples: list[float]) -> object:
    return median_rate(samples) if samples else "n/a"


Samples = dict[str, tuple[list[float], list[float]]]


def _measure(
    workdir: Path,
    mode: str,
    rounds: int,
    contenders: Sequence[tuple[str, Callable[..., Any]]],
    *extra: int,
) -> Samples:
    samples: Samples = {name: ([], []) for name, _ in contenders}
    for round_ in range(rounds):
        shift = round_ % len(contenders)
        for name, contender in [*contenders[shift:], *contenders[:shift]]:
            path = workdir / f"{name}-{mode}-{len(extra)}-{round_}.db"
            rates = contender(path, mode, *extra)
            if rates is not None:
                samples[name][0].append(rates[0])
                samples[name][1].append(rates[1])
    return samples


def _rows(samples: Samples) -> list[list[object]]:
    rows: list[list[object]] = []
    for index, label in enumerate(LABELS):
        ours = samples["runstate"][index]
        ceiling = samples["sqlite3"][index]
        theirs = samples["eventsourcing"][index]
        rows.append(
            [
                label,
                _median(ours),
                _median(ceiling),
                _median(theirs),
                _ratio(ours, ceiling),
                _ratio(ours, theirs),
            ]
        )
    return rows


def main() -> None:
    """Measure every contender at every synchronous mode; print medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", type=int, default=2_000, help="per timed loop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="FULL,NORMAL", help="synchronous modes to compare")
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go")
    parser.add_argument(
        "--tasks", type=int, default=16, help="concurrent writers of the second table; 0: off"
    )
    args = parser.parse_args()
    modes = [mode.strip().upper() for mode in args.modes.split(",") if mode.strip()]
    header = ["operation", "runstate", "sqlite3", "eventsourcing", "vs sqlite3", "vs es"]
    workdir = Path(tempfile.mkdtemp(prefix="bench-sqlite-", dir=args.dir))
    try:
        for mode in modes:
            samples = _measure(workdir, mode, args.rounds, CONTENDERS, args.operations)
            print_table(
                f"sqlite:// synchronous={mode}, one writer awaiting each call — median of "
                f"{args.rounds} rounds x {args.operations} operations",
                header,
                _rows(samples),
            )
            if args.tasks > 0:
                samples = _measure(
                    workdir, mode, args.rounds, CONCURRENT, args.operations, args.tasks
                )
                print_table(
                    f"sqlite:// synchronous={mode}, {args.tasks} concurrent writers (tasks on one "
                    f"store; threads for sqlite3 and eventsourcing) — median of {args.rounds} "
                    f"rounds x {args.operations} operations",
                    header,
                    _rows(samples),
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
