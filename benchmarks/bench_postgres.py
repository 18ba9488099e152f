"""Throughput of the PostgreSQL adapter next to its ceiling (pgbench) and a baseline.

Measures bootstraps/s (metadata + 2 events + 2 outbox records) and single-event appends/s at
several concurrency levels; pgbench runs the same writes as one SQL statement per operation
(plain, and with the adapter's NOTIFY); eventsourcing's PostgresApplicationRecorder inserts two
events per "bootstrap" from threads. Every number is a median over rounds, and rounds visit the
cells in turn so a noisy neighbour hurts all of them alike. Scratch schemas are dropped at the
end. Example::

    .venv/bin/python benchmarks/bench_postgres.py --seconds 3 --rounds 3
    .venv/bin/python benchmarks/bench_postgres.py --prefill 1000000
    .venv/bin/python benchmarks/bench_postgres.py --relay   # a relay process watches the outbox

With ``--relay`` a separate process runs a relay (no-op sink) on the runstate schema during the
runstate cells, as in production: it drains the outbox and, whenever it waits, registers as a
watcher, so writes pay for the conditional NOTIFY.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import settle_inputs
from runstate import RunBootstrapInput, RunEventInput, RunMetadata, open_store
from runstate.adapters.postgres import PostgresStore, migrate
from runstate.adapters.postgres._config import default_write_statements

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

PGBENCH_BOOTSTRAP = """
WITH m AS (
    INSERT INTO {s}.run_metadata (run_id, workflow, input, labels, created_at, schema_version,
                                  last_seq)
    VALUES ('pgb-' || gen_random_uuid(), 'bench', '{{"n": 1}}', '{{}}', now(), 1, 2)
    RETURNING run_id
), e AS (
    INSERT INTO {s}.run_events (run_id, seq, event_id, type, payload, schema_version,
                                recorded_at)
    SELECT m.run_id, g, gen_random_uuid()::text, 'RunQueued', '{{"queue": "q"}}', 1, now()
      FROM m, generate_series(1, 2) AS g
    RETURNING position, run_id, seq, recorded_at
), o AS (
    INSERT INTO {s}.run_outbox (outbox_id, run_id, seq, workflow, recorded_at)
    SELECT position, run_id, seq, 'bench', recorded_at FROM e
    RETURNING 1
)
SELECT {tail} FROM (SELECT count(*) FROM o) AS done;
"""

PGBENCH_APPEND = """
WITH m AS (
    UPDATE {s}.run_metadata SET last_seq = last_seq + 1
     WHERE run_id = 'pgb-run-' || :client_id
    RETURNING run_id, last_seq, workflow
), e AS (
    INSERT INTO {s}.run_events (run_id, seq, event_id, type, payload, schema_version,
                                recorded_at)
    SELECT run_id, last_seq, gen_random_uuid()::text, 'Step', '{{"n": 1}}', 1, now() FROM m
    RETURNING position, run_id, seq, recorded_at
), o AS (
    INSERT INTO {s}.run_outbox (outbox_id, run_id, seq, workflow, recorded_at)
    SELECT position, run_id, seq, 'bench', recorded_at FROM e
    RETURNING 1
)
SELECT {tail} FROM (SELECT count(*) FROM o) AS done;
"""

PREFILL_SQL = """
INSERT INTO run_metadata (run_id, workflow, input, labels, created_at, schema_version, last_seq)
SELECT 'pre-' || r, 'bench', '{{"n": 1}}', '{{}}', now(), 1, {per_run}
  FROM generate_series(1, {runs}) AS r;
INSERT INTO run_events (run_id, seq, event_id, type, payload, schema_version, recorded_at)
SELECT 'pre-' || r, s, md5(r || '-' || s), 'Step', '{{"n": 1, "pad": "xxxxxxxxxxxxxxxx"}}', 1,
       now()
  FROM generate_series(1, {runs}) AS r, generate_series(1, {per_run}) AS s;
INSERT INTO run_outbox (outbox_id, run_id, seq, workflow, recorded_at, delivered_at)
SELECT position, run_id, seq, 'bench', recorded_at, now() FROM run_events
 WHERE run_id LIKE 'pre-%';
"""


def _event_batch(*types: str) -> list[RunEventInput]:
    return [RunEventInput(type=t, payload={"queue": "q"}) for t in types]


def bootstrap_inputs(count: int) -> list[RunBootstrapInput]:
    """The benchmark's bootstraps, as pgbench's statement writes them: metadata + 2 events."""
    return [
        RunBootstrapInput(
            metadata=RunMetadata(run_id=f"rs-{uuid.uuid4().hex}", workflow="bench", input={"n": 1}),
            first_events=_event_batch("RunQueued", "RunStarted"),
        )
        for _ in range(count)
    ]


#: Inputs built per cell before its clock starts, per second of the cell: more than any
#: machine here writes, so the cell ends on its deadline, not on running out.
INPUTS_PER_SECOND = 8_000

#: CPU time (user + system) of this process per operation in the last timed cell, in µs: the
#: Python client's share of the machine, which on a small machine the server does not get.
last_client_cpu_per_op = float("nan")


async def _timed_tasks(
    concurrency: int, seconds: float, inputs: list[Any], op: Callable[[int, Any], Awaitable[None]]
) -> float:
    """Run ``op`` from ``concurrency`` tasks until the deadline; return operations/s.

    The inputs are built beforehand, as in bench_sqlite.py: the cell measures the store, not
    the benchmark's own uuid4 and dataclass construction (pgbench builds its rows in SQL).
    """
    global last_client_cpu_per_op
    settle_inputs()
    feed = iter(inputs)
    done = 0
    cpu_before = time.process_time()

    async def worker(index: int) -> None:
        nonlocal done
        for item in feed:
            await op(index, item)
            done += 1
            if time.perf_counter() >= deadline:
                return

    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    rate = done / (time.perf_counter() - started)
    last_client_cpu_per_op = (time.process_time() - cpu_before) / max(done, 1) * 1e6
    gc.unfreeze()
    return rate


async def runstate_cell(url: str, schema: str, op: str, concurrency: int, seconds: float) -> float:
    """Operations per second of the adapter for one (operation, concurrency) cell."""
    store = await open_store(url, schema=schema, pool_size=concurrency)
    assert isinstance(store, PostgresStore)
    count = int(seconds * INPUTS_PER_SECOND) + 1_000
    try:
        if op == "bootstrap":
            bootstraps = bootstrap_inputs(count)

            async def bootstrap(_index: int, item: RunBootstrapInput) -> None:
                await store.bootstrap_run_tx(item)

            return await _timed_tasks(concurrency, seconds, bootstraps, bootstrap)
        runs = [f"rs-append-{uuid.uuid4().hex}" for _ in range(concurrency)]
        for run_id in runs:
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_id, workflow="bench"),
                    first_events=_event_batch("RunQueued"),
                )
            )
        appends = [_event_batch("Step") for _ in range(count)]

        async def append(index: int, events: list[RunEventInput]) -> None:
            await store.append_and_enqueue_tx(runs[index], events)

        return await _timed_tasks(concurrency, seconds, appends, append)
    finally:
        await store.close()


async def relay_child(url: str, schema: str) -> None:
    """Relay the schema's outbox to a no-op sink until killed (the ``--relay`` process)."""
    from runstate.relay import Relay
    from runstate.relay.metrics import RelayMetrics
    from runstate.sinks.callable import CallableSink

    async def ignore(_event: object) -> None:
        return None

    store = await open_store(url, schema=schema, pool_size=2)
    assert isinstance(store, PostgresStore)
    try:
        relay = Relay(
            store, CallableSink(ignore), batch_size=500, metrics=RelayMetrics(export=False)
        )
        await relay.run_forever()
    finally:
        await store.close()


def start_relay(url: str, schema: str) -> subprocess.Popen[bytes]:
    """Start ``relay_child`` in its own process."""
    return subprocess.Popen(
        [sys.executable, __file__, "--url", url, "--relay-child", schema],
        stdout=subprocess.DEVNULL,
    )


def pgbench_cell(
    url: str, schema: str, op: str, concurrency: int, seconds: float, notify: bool
) -> float:
    """Transactions per second of pgbench running the equivalent single statement."""
    parts = urlsplit(url)
    template = PGBENCH_BOOTSTRAP if op == "bootstrap" else PGBENCH_APPEND
    tail = "pg_notify('runstate_bench', 'x')" if notify else "1"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(template.format(s=f'"{schema}"', tail=tail))
    command = [
        "pgbench",
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port or 5432),
        "-U",
        parts.username or "postgres",
        "-M",
        "prepared",
        "-c",
        str(concurrency),
        "-j",
        str(min(2, concurrency)),
        "-T",
        str(max(1, round(seconds))),
        "-n",
        "-f",
        script.name,
        parts.path.lstrip("/") or "postgres",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    finally:
        Path(script.name).unlink()
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{done.stdout}\n{done.stderr}")
    return float(match.group(1))


def eventsourcing_cell(url: str, schema: str, threads: int, seconds: float) -> float:
    """Two-event inserts per second through eventsourcing's PostgreSQL application recorder."""
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    parts = urlsplit(url)
    datastore = PostgresDatastore(
        dbname=parts.path.lstrip("/"),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or "",
        pool_size=threads,
        schema=schema,
    )
    try:
        recorder = PostgresApplicationRecorder(datastore)
        recorder.create_table()
        counts = [0] * threads
        deadline = time.perf_counter() + seconds

        def worker(index: int) -> None:
            while time.perf_counter() < deadline:
                originator = uuid.uuid4()
                recorder.insert_events(
                    [
                        StoredEvent(originator, 1, "RunQueued", b'{"queue":"q"}'),
                        StoredEvent(originator, 2, "RunStarted", b'{"queue":"q"}'),
                    ]
                )
                counts[index] += 1

        started = time.perf_counter()
        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        return sum(counts) / (time.perf_counter() - started)
    finally:
        datastore.close()


async def _admin(url: str, sql: str, *args: Any) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql, *args)
    finally:
        await connection.close()


async def _prepare_pgbench_schema(url: str, schema: str, max_clients: int) -> None:
    connection = await asyncpg.connect(url)
    try:
        await migrate(connection, schema)
        await connection.execute(
            f'INSERT INTO "{schema}".run_metadata (run_id, workflow, input, labels,'  # noqa: S608
            " created_at, schema_version) SELECT 'pgb-run-' || g, 'bench', 'null', '{}',"
            " now(), 1 FROM generate_series(0, $1) AS g",
            max_clients,
        )
    finally:
        await connection.close()


async def prefill(url: str, schema: str, events: int) -> float:
    """Store ``events`` delivered events in ``schema`` with set-based SQL; return seconds."""
    per_run = 10
    runs = max(1, events // per_run)
    started = time.perf_counter()
    connection = await asyncpg.connect(url, server_settings={"search_path": f'"{schema}"'})
    try:
        await connection.execute(PREFILL_SQL.format(runs=runs, per_run=per_run))
        await connection.execute("VACUUM ANALYZE run_metadata, run_events, run_outbox")
        # The bulk load leaves ~0.5 GB of WAL and dirty pages; without this the next
        # max_wal_size checkpoints land inside the measured cells and the comparison measures
        # the load's write-back, not the writes against a big table.
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    return time.perf_counter() - started


def _median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


async def main() -> None:
    """Parse arguments, run every cell round-robin, print the table of medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one cell")
    parser.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--es-threads", type=int, default=8)
    parser.add_argument("--prefill", type=int, default=0, help="events to store, then rerun")
    parser.add_argument("--skip-pgbench", action="store_true")
    parser.add_argument("--skip-eventsourcing", action="store_true")
    parser.add_argument("--relay", action="store_true", help="a relay process watches")
    parser.add_argument("--relay-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay_child:
        await relay_child(args.url, args.relay_child)
        return
    levels = [int(c) for c in args.concurrency.split(",")]
    tag = uuid.uuid4().hex[:10]
    rs_schema, pgb_schema, es_schema = (
        f"rs_bench_{tag}",
        f"rs_bench_pgb_{tag}",
        f"rs_bench_es_{tag}",
    )
    results: dict[str, list[float]] = {}
    relay: subprocess.Popen[bytes] | None = None

    def record(key: str, value: float) -> None:
        results.setdefault(key, []).append(value)
        print(f"  {key:<40} {value:>10.0f}/s", flush=True)

    full_schema = f"rs_bench_full_{tag}"
    try:
        await _migrate_only(args.url, rs_schema)
        if args.relay:
            relay = start_relay(args.url, rs_schema)
        if not args.skip_pgbench:
            await _prepare_pgbench_schema(args.url, pgb_schema, max(levels))
        if not args.skip_eventsourcing:
            await _admin(args.url, f'CREATE SCHEMA "{es_schema}"')
        # The prefilled store is a second schema, filled before the rounds, and every round
        # visits the empty and the prefilled store in turn: the machine's speed drifts by
        # more than 10% over minutes here, so phases run one after the other would compare
        # the drift, not the table sizes.
        stores = [("empty", rs_schema)]
        if args.prefill:
            await _migrate_only(args.url, full_schema)
            took = await prefill(args.url, full_schema, args.prefill)
            print(f"prefilled {args.prefill} events in {took:.1f}s", flush=True)
            stores.append(("prefilled", full_schema))
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}", flush=True)
            for op in ("bootstrap", "append"):
                for level in levels:
                    for phase, schema in stores:
                        value = await runstate_cell(args.url, schema, op, level, args.seconds)
                        record(f"{phase}/runstate/{op}/{level}", value)
                        results.setdefault(f"{phase}/client-cpu/{op}/{level}", []).append(
                            last_client_cpu_per_op
                        )
                    if not args.skip_pgbench:
                        for notify in (False, True):
                            name = "pgbench+notify" if notify else "pgbench"
                            value = pgbench_cell(
                                args.url, pgb_schema, op, level, args.seconds, notify
                            )
                            record(f"empty/{name}/{op}/{level}", value)
            if not args.skip_eventsourcing:
                value = eventsourcing_cell(args.url, es_schema, args.es_threads, args.seconds)
                record(f"empty/eventsourcing/bootstrap/{args.es_threads}", value)
        _print_table(results, levels, args)
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait()
        for schema in (rs_schema, full_schema, pgb_schema, es_schema):
            await _admin(args.url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _migrate_only(url: str, schema: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await migrate(connection, schema)
    finally:
        await connection.close()


def _print_table(results: dict[str, list[float]], levels: list[int], args: Any) -> None:
    med = {key: _median(values) for key, values in results.items()}
    print()
    print(
        f"medians over {args.rounds} rounds of {args.seconds:g}s "
        f"(ops/s; bootstrap = metadata + 2 events + 2 outbox rows)"
    )
    header = (
        f"{'operation':<10} {'conc':>4} {'runstate':>9} {'pgbench':>9} {'ratio':>6} "
        f"{'pgb+ntfy':>9} {'ratio':>6} {'py µs/op':>8}"
    )
    if args.prefill:
        header += f" {'prefilled':>9} {'vs empty':>8}"
    print(header)
    print(
        "(py µs/op: CPU time of runstate's Python client per operation, taken from the same "
        "cores as the server)"
    )
    statements = ", ".join(f"{level}: {default_write_statements(level)}" for level in levels)
    print(f"(runstate: pool_size = conc, default write_statements by conc: {statements})")
    for op in ("bootstrap", "append"):
        for level in levels:
            ours = med.get(f"empty/runstate/{op}/{level}", float("nan"))
            plain = med.get(f"empty/pgbench/{op}/{level}", float("nan"))
            notify = med.get(f"empty/pgbench+notify/{op}/{level}", float("nan"))
            cpu = med.get(f"empty/client-cpu/{op}/{level}", float("nan"))
            line = (
                f"{op:<10} {level:>4} {ours:>9.0f} {plain:>9.0f} {ours / plain:>6.2f} "
                f"{notify:>9.0f} {ours / notify:>6.2f} {cpu:>8.0f}"
            )
            if args.prefill:
                full = med.get(f"prefilled/runstate/{op}/{level}", float("nan"))
                line += f" {full:>9.0f} {full / ours:>8.2f}"
            print(line)
    es = med.get(f"empty/eventsourcing/bootstrap/{args.es_threads}")
    if es is not None:
        ours = med.get(f"empty/runstate/bootstrap/{args.es_threads}", float("nan"))
        print(
            f"eventsourcing 9.5.6 PostgresApplicationRecorder, {args.es_threads} threads, "
            f"2 events per insert: {es:.0f}/s; runstate bootstrap at {args.es_threads}: "
            f"{ours:.0f}/s = {ours / es:.1f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
