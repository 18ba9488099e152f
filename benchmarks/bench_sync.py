"""runstate.sync throughput: SQLite next to its ceiling and eventsourcing, PostgreSQL next to
the async store.

Run: ``python benchmarks/bench_sync.py [--operations N] [--rounds R] [--modes FULL,NORMAL]
[--threads 8] [--postgres URL | --no-postgres]``.

SQLite, at each ``synchronous`` mode, the work of ``bench_sqlite.py`` (whose inputs, plain
sqlite3 ceiling and eventsourcing baseline this reuses): ``bootstrap_run_tx`` with
[RunQueued, RunStarted] and single-event ``append_and_enqueue_tx`` round-robin over 100 runs,

- through ``runstate.sync.open_store`` with one thread calling in a loop, and with
  ``--threads`` threads sharing one store (writer i appends to runs i, i + threads, ...);
- the ceiling: the adapter's very statements on plain sqlite3, one ``BEGIN IMMEDIATE ...
  COMMIT`` per operation, nothing around them;
- eventsourcing 9.5.6's ``SQLiteApplicationRecorder`` with one thread and ``--threads``.

PostgreSQL: the same work through the synchronous store (one thread, ``--threads`` threads)
and through the async store (one task, ``--threads`` tasks), in one schema made for the run
and dropped at the end.

Every round uses fresh database files (and fresh run ids) and rotates the contenders' order;
tables show medians over the rounds, then the client CPU per operation (``process_time`` of
every thread of this process, over the timed loop).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import (
    cpu_per_operation,
    median_rate,
    print_table,
    timed_rate,
    timed_rate_async,
)
from benchmarks.bench_sqlite import (
    _appends,
    _bootstraps,
    _in_threads,
    _task_appends,
    ceiling_rates,
    eventsourcing_rates,
)
from runstate import RunBootstrapInput, RunEventInput, RunMetadata, sync
from runstate import open_store as open_async_store

Rates = tuple[float, float]
Measured = tuple[Rates, tuple[float, float]]  # (bootstraps/s, appends/s), CPU s/op of each
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
LABELS = ("bootstraps/s (2 events)", "appends/s (1 event)")


def _split(jobs: Sequence[Callable[[], None]]) -> Callable[[], None]:
    """One job runs on this thread; several run on threads started together."""
    if len(jobs) == 1:
        return jobs[0]
    return lambda: _in_threads(jobs)


def _sync_work(
    store: Any,
    bootstraps: Sequence[RunBootstrapInput],
    appends: Sequence[tuple[str, list[RunEventInput]]],
    threads: int,
) -> Rates:
    def boot(share: Sequence[RunBootstrapInput]) -> Callable[[], None]:
        def run() -> None:
            for item in share:
                store.bootstrap_run_tx(item)

        return run

    def append(share: Sequence[tuple[str, list[RunEventInput]]]) -> Callable[[], None]:
        def run() -> None:
            for run_id, events in share:
                store.append_and_enqueue_tx(run_id, events)

        return run

    operations = len(bootstraps)
    boot_jobs = [boot(bootstraps[index::threads]) for index in range(threads)]
    append_jobs = [append(share) for share in _task_appends(appends, threads)]
    return (
        timed_rate(operations, _split(boot_jobs)),
        timed_rate(operations, _split(append_jobs)),
    )


def measured(run: Callable[[], Rates | None]) -> Measured | None:
    """Run one contender; return its rates and the CPU per operation of both loops."""
    with cpu_per_operation() as cpu:
        rates = run()
    if rates is None:
        return None
    return rates, (cpu[0], cpu[1])


def sync_sqlite(path: Path, mode: str, operations: int, threads: int) -> Rates:
    """runstate.sync's SQLite store, ``threads`` threads sharing it."""
    bootstraps, appends = _bootstraps(operations), _appends(operations)
    with sync.open_store(f"sqlite:///{path}", synchronous=mode) as store:
        return _sync_work(store, bootstraps, appends, threads)


# -- PostgreSQL ---------------------------------------------------------------------------------


def _pg_inputs(
    prefix: str, operations: int
) -> tuple[list[RunBootstrapInput], list[RunBootstrapInput], list[tuple[str, list[RunEventInput]]]]:
    """Bootstraps to time, the 100 runs the appends go to, and the appends."""
    boots = [
        RunBootstrapInput(
            metadata=RunMetadata(run_id=f"{prefix}-b{i}", workflow="bench", input={"n": i}),
            first_events=[
                RunEventInput(type="RunQueued", payload={"queue": "default"}),
                RunEventInput(type="RunStarted", payload={"worker": "w-1"}),
            ],
        )
        for i in range(operations)
    ]
    targets = [
        RunBootstrapInput(
            metadata=RunMetadata(run_id=f"{prefix}-run-{i}", workflow="bench"),
            first_events=[RunEventInput(type="RunQueued")],
        )
        for i in range(100)
    ]
    appends = [
        (f"{prefix}-run-{i % 100}", [RunEventInput(type="StepStarted", payload={"step": i})])
        for i in range(operations)
    ]
    return boots, targets, appends


def sync_postgres(url: str, operations: int, threads: int) -> Rates:
    """runstate.sync's PostgreSQL store, ``threads`` threads sharing it."""
    boots, targets, appends = _pg_inputs(f"s{threads}-{uuid.uuid4().hex[:8]}", operations)
    with sync.open_store(url) as store:
        for target in targets:
            store.bootstrap_run_tx(target)
        return _sync_work(store, boots, appends, threads)


async def _async_postgres(url: str, operations: int, tasks: int) -> Rates:
    boots, targets, appends = _pg_inputs(f"a{tasks}-{uuid.uuid4().hex[:8]}", operations)
    async with open_async_store(url) as store:
        for target in targets:
            await store.bootstrap_run_tx(target)

        async def boot() -> None:
            async def worker(index: int) -> None:
                for item in boots[index::tasks]:
                    await store.bootstrap_run_tx(item)

            await asyncio.gather(*(worker(i) for i in range(tasks)))

        async def append() -> None:
            async def worker(share: list[tuple[str, list[RunEventInput]]]) -> None:
                for run_id, events in share:
                    await store.append_and_enqueue_tx(run_id, events)

            shares = _task_appends(appends, tasks)
            await asyncio.gather(*(worker(share) for share in shares))

        return (
            await timed_rate_async(operations, boot),
            await timed_rate_async(operations, append),
        )


def async_postgres(url: str, operations: int, tasks: int) -> Rates:
    """The async PostgreSQL store with ``tasks`` tasks on one event loop."""
    return asyncio.run(_async_postgres(url, operations, tasks))


# -- rounds and tables --------------------------------------------------------------------------

Samples = dict[str, tuple[list[float], list[float], list[float], list[float]]]


def _collect(
    rounds: int, contenders: list[tuple[str, Callable[[int], Measured | None]]]
) -> Samples:
    samples: Samples = {name: ([], [], [], []) for name, _ in contenders}
    for round_ in range(rounds):
        shift = round_ % len(contenders)
        for name, contender in [*contenders[shift:], *contenders[:shift]]:
            result = contender(round_)
            if result is None:
                continue
            (boot, append), (boot_cpu, append_cpu) = result
            for column, value in zip(
                samples[name], (boot, append, boot_cpu, append_cpu), strict=True
            ):
                column.append(value)
    return samples


def _median(values: list[float]) -> float | None:
    return median_rate(values) if values else None


def _ratio(samples: Samples, ours: str, theirs: str, index: int) -> object:
    a, b = _median(samples[ours][index]), _median(samples[theirs][index])
    return "n/a" if a is None or b is None else f"{a / b:.2f}x"


def _rate_rows(
    samples: Samples, names: list[str], ratios: list[tuple[str, str]]
) -> list[list[object]]:
    rows: list[list[object]] = []
    for index, label in enumerate(LABELS):
        cells: list[object] = [label]
        cells += [_median(samples[name][index]) or "n/a" for name in names]
        cells += [_ratio(samples, ours, theirs, index) for ours, theirs in ratios]
        rows.append(cells)
    return rows


def _cpu_rows(samples: Samples, names: list[str]) -> list[list[object]]:
    rows: list[list[object]] = []
    for index, label in enumerate(LABELS):
        cpu = [_median(samples[name][2 + index]) for name in names]
        rows.append([label, *(f"{value * 1e6:.1f}" if value else "n/a" for value in cpu)])
    return rows


def sqlite_tables(workdir: Path, mode: str, operations: int, rounds: int, threads: int) -> None:
    """Measure and print the SQLite tables of one ``synchronous`` mode."""

    def at(name: str, round_: int) -> Path:
        return workdir / f"{name}-{mode}-{round_}.db"

    contenders: list[tuple[str, Callable[[int], Measured | None]]] = [
        ("sync 1", lambda r: measured(lambda: sync_sqlite(at("s1", r), mode, operations, 1))),
        ("sqlite3", lambda r: measured(lambda: ceiling_rates(at("c", r), mode, operations))),
        (
            f"sync {threads}",
            lambda r: measured(lambda: sync_sqlite(at("s8", r), mode, operations, threads)),
        ),
        ("es 1", lambda r: measured(lambda: eventsourcing_rates(at("e1", r), mode, operations))),
        (
            f"es {threads}",
            lambda r: measured(lambda: eventsourcing_rates(at("e8", r), mode, operations, threads)),
        ),
    ]
    samples = _collect(rounds, contenders)
    names = [name for name, _ in contenders]
    many, es_many = f"sync {threads}", f"es {threads}"
    title = f"sqlite:// synchronous={mode} — median of {rounds} rounds x {operations} operations"
    header = ["operation", "sync 1 thread", "sqlite3 ceiling", f"sync {threads} threads"]
    header += ["es 1 thread", f"es {threads} threads", "1t vs ceiling", f"{threads}t vs 1t"]
    header += [f"{threads}t vs es {threads}t", "1t vs es 1t"]
    ratios = [("sync 1", "sqlite3"), (many, "sync 1"), (many, es_many), ("sync 1", "es 1")]
    print_table(title, header, _rate_rows(samples, names, ratios))
    print_table(
        f"sqlite:// synchronous={mode} — client CPU µs per operation (median)",
        [*header[:4], "es 1 thread", f"es {threads} threads"],
        _cpu_rows(samples, names),
    )


def postgres_tables(url: str, operations: int, rounds: int, threads: int) -> None:
    """Measure and print the PostgreSQL tables (sync store next to the async one)."""
    contenders: list[tuple[str, Callable[[int], Measured | None]]] = [
        ("sync 1", lambda r: measured(lambda: sync_postgres(url, operations, 1))),
        ("async 1", lambda r: measured(lambda: async_postgres(url, operations, 1))),
        (f"sync {threads}", lambda r: measured(lambda: sync_postgres(url, operations, threads))),
        (f"async {threads}", lambda r: measured(lambda: async_postgres(url, operations, threads))),
    ]
    samples = _collect(rounds, contenders)
    names = [name for name, _ in contenders]
    many, async_many = f"sync {threads}", f"async {threads}"
    header = ["operation", "sync 1 thread", "async 1 task", f"sync {threads} threads"]
    header.append(f"async {threads} tasks")
    print_table(
        f"postgresql:// — median of {rounds} rounds x {operations} operations",
        [*header, "1t vs 1 task", f"{threads}t vs {threads} tasks"],
        _rate_rows(samples, names, [("sync 1", "async 1"), (many, async_many)]),
    )
    print_table(
        "postgresql:// — client CPU µs per operation (median)", header, _cpu_rows(samples, names)
    )


async def _schema(url: str, sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def main() -> None:
    """Measure every contender; print medians, ratios and CPU per operation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", type=int, default=2_000, help="per timed loop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="FULL,NORMAL", help="SQLite synchronous modes")
    parser.add_argument("--threads", type=int, default=8, help="writers of the concurrent cells")
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server URL")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL tables")
    args = parser.parse_args()
    modes = [mode.strip().upper() for mode in args.modes.split(",") if mode.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="bench-sync-", dir=args.dir))
    try:
        for mode in modes:
            sqlite_tables(workdir, mode, args.operations, args.rounds, args.threads)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.no_postgres:
        return
    schema = f"bench_sync_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in args.postgres else "?"
    url = f"{args.postgres}{separator}schema={schema}"
    try:
        postgres_tables(url, args.operations, args.rounds, args.threads)
    finally:
        asyncio.run(_schema(args.postgres, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
