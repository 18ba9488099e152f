"""The run summary at scale: the first page of runs in one status, and what the summary costs.

Part 1 (queries): a store on SQLite and on PostgreSQL is filled with ``--runs`` runs (default
1,000,000) by set-based SQL, in batches of ``--batch`` runs: one INSERT ... SELECT of
metadata and one of events per batch (no outbox records; they play no part in a run query).
On PostgreSQL the summaries are written by the store's own statement-level trigger as the
events go in; on SQLite the summary columns the adapter writes are computed in the same
INSERT. Statuses by run number mod 10: 0-3 QUEUED (RunQueued), 4-5 RUNNING (+RunStarted),
6-8 SUCCEEDED (+RunSucceeded), 9 FAILED (+RunFailed). Then the median of ``--calls`` calls of
``query_runs(RunFilter(statuses={S}), limit=50)`` per status, next to the unfiltered
``list_runs(limit=50)`` page (the baseline: one range of the created-at index).

Part 2 (writes): single-client bootstraps (metadata + 2 events) and single-event appends on a
fresh store, with this tree's runstate and with another tree's (``--baseline-src``, e.g. a
checkout of main without the summary), each in its own process, sides alternating per
round; medians over ``--rounds`` rounds of ops/s and client CPU per op (time.process_time).

Example::

    git archive 62d1f28 | tar -x -C /tmp/rs-main
    .venv/bin/python benchmarks/bench_catalog.py --baseline-src /tmp/rs-main/src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import print_table, timed_rate_cpu_async
from runstate import RunBootstrapInput, RunEventInput, RunMetadata, open_store

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
STATUSES = ("FAILED", "RUNNING", "QUEUED", "SUCCEEDED")
# (run number mod 10, seq, event type): the events each kind of run gets.
PLAN = [(k, 1, "RunQueued") for k in range(10)]
PLAN += [(k, 2, "RunStarted") for k in range(4, 10)]
PLAN += [(k, 3, "RunSucceeded") for k in range(6, 9)] + [(9, 3, "RunFailed")]
_BASE_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
# The SQL below gets only these constants spliced in; run bounds are bound parameters.


def _plan_values() -> str:
    return ", ".join(f"({k}, {seq}, '{kind}')" for k, seq, kind in PLAN)


PG_METADATA = """
INSERT INTO run_metadata (run_id, workflow, tenant_id, input, labels, created_at,
                          schema_version, last_seq)
SELECT 'bench-' || lpad(g::text, 8, '0'), 'wf-' || (g % 5), 'tenant-' || (g % 10), '{}', '{}',
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', 1,
       CASE WHEN g % 10 < 4 THEN 1 WHEN g % 10 < 6 THEN 2 ELSE 3 END
  FROM generate_series($1::bigint, $2::bigint) AS g
"""

PG_EVENTS = """
INSERT INTO run_events (run_id, seq, event_id, type, payload, schema_version, recorded_at)
SELECT 'bench-' || lpad(g::text, 8, '0'), p.seq, 'e' || p.seq, p.kind, '{}', 1,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' + p.seq * interval '1 ms'
  FROM generate_series($1::bigint, $2::bigint) AS g
  JOIN (VALUES __PLAN__) AS p (k, seq, kind) ON p.k = g % 10
 ORDER BY g, p.seq
""".replace("__PLAN__", _plan_values()).replace("__BASE__", str(_BASE_US))

SQLITE_RUNS = """
WITH RECURSIVE n (g) AS (SELECT ? UNION ALL SELECT g + 1 FROM n WHERE g < ?)
INSERT INTO runstate_runs (run_id, workflow, tenant_id, input, labels, created_at,
                           schema_version, last_seq, status, attempt, updated_at, started_at,
                           finished_at)
SELECT printf('bench-%08d', g), 'wf-' || (g % 5), 'tenant-' || (g % 10), '{}', '{}',
       __BASE__ + g * 1000000, 1,
       CASE WHEN g % 10 < 4 THEN 1 WHEN g % 10 < 6 THEN 2 ELSE 3 END,
       CASE WHEN g % 10 < 4 THEN 'QUEUED' WHEN g % 10 < 6 THEN 'RUNNING'
            WHEN g % 10 < 9 THEN 'SUCCEEDED' ELSE 'FAILED' END,
       1,
       __BASE__ + g * 1000000 + 1000 * (CASE WHEN g % 10 < 4 THEN 1
                                             WHEN g % 10 < 6 THEN 2 ELSE 3 END),
       CASE WHEN g % 10 >= 4 THEN __BASE__ + g * 1000000 + 2000 END,
       CASE WHEN g % 10 >= 6 THEN __BASE__ + g * 1000000 + 3000 END
  FROM n
""".replace("__PLAN__", _plan_values()).replace("__BASE__", str(_BASE_US))

SQLITE_EVENTS = """
WITH RECURSIVE n (g) AS (SELECT ? UNION ALL SELECT g + 1 FROM n WHERE g < ?),
plan (k, seq, kind) AS (VALUES __PLAN__)
INSERT INTO runstate_events (run_id, seq, event_id, type, payload, schema_version, recorded_at)
SELECT printf('bench-%08d', g), plan.seq, 'e' || plan.seq, plan.kind, '{}', 1,
       __BASE__ + g * 1000000 + plan.seq * 1000
  FROM n JOIN plan ON plan.k = g % 10
 ORDER BY g, plan.seq
""".replace("__PLAN__", _plan_values()).replace("__BASE__", str(_BASE_US))


async def fill_postgres(url: str, schema: str, runs: int, batch: int) -> float:
    """Fill a migrated schema with ``runs`` runs; return the seconds it took."""
    connection = await asyncpg.connect(url, server_settings={"search_path": schema})
    started = time.perf_counter()
    try:
        for first in range(1, runs + 1, batch):
            last = min(first + batch - 1, runs)
            async with connection.transaction():
                await connection.execute(PG_METADATA, first, last)
                await connection.execute(PG_EVENTS, first, last)
        await connection.execute("ANALYZE run_summaries")
    finally:
        await connection.close()
    return time.perf_counter() - started


def fill_sqlite(path: Path, runs: int, batch: int) -> float:
    """Fill a migrated SQLite file with ``runs`` runs; return the seconds it took."""
    started = time.perf_counter()
    connection = sqlite3.connect(path)
    try:
        for first in range(1, runs + 1, batch):
            last = min(first + batch - 1, runs)
            with connection:
                connection.execute(SQLITE_RUNS, (first, last))
                connection.execute(SQLITE_EVENTS, (first, last))
        connection.execute("ANALYZE")
    finally:
        connection.close()
    return time.perf_counter() - started


async def time_queries(url: str, calls: int, runs: int) -> dict[str, float]:
    """Median milliseconds of the first page per status, and of the unfiltered list_runs."""
    # Imported here: the write side also runs against a tree that has no RunFilter.
    from runstate.types import RunFilter

    medians: dict[str, float] = {}
    async with open_store(url) as store:
        for status in STATUSES:
            samples = []
            for _ in range(calls):
                started = time.perf_counter()
                page = await store.query_runs(  # type: ignore[attr-defined]
                    RunFilter(statuses=frozenset({status})), limit=50
                )
                samples.append((time.perf_counter() - started) * 1000)
                # The answer is checked, so a fast wrong page cannot pass.
                assert len(page.runs) == min(50, runs), len(page.runs)
                assert {s.status for s in page.runs} == {status}
                created = [s.metadata.created_at for s in page.runs]
                assert created == sorted(created, reverse=True)
            medians[status] = statistics.median(samples)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            listed = await store.list_runs(limit=50)  # type: ignore[attr-defined]
            samples.append((time.perf_counter() - started) * 1000)
            assert len(listed) == 50
        medians["list_runs (baseline)"] = statistics.median(samples)
    return medians


async def write_side(url: str, operations: int) -> dict[str, float]:
    """Bootstraps then appends on one fresh store; ops/s and CPU µs per op of each."""
    tag = uuid.uuid4().hex[:8]
    inputs = [
        RunBootstrapInput(
            metadata=RunMetadata(run_id=f"w-{tag}-{i}", workflow="bench", input={"n": i}),
            first_events=[
                RunEventInput(type="RunQueued", payload={"queue": "default"}),
                RunEventInput(type="RunStarted", payload={"worker": "w-1"}),
            ],
        )
        for i in range(operations)
    ]
    events = [[RunEventInput(type="StepStarted", payload={"step": i})] for i in range(operations)]
    async with open_store(url) as store:

        async def bootstraps() -> None:
            for item in inputs:
                await store.bootstrap_run_tx(item)

        async def appends() -> None:
            for i, batch in enumerate(events):
                await store.append_and_enqueue_tx(inputs[i % 50].metadata.run_id, batch)

        boot_rate, boot_cpu = await timed_rate_cpu_async(operations, bootstraps)
        append_rate, append_cpu = await timed_rate_cpu_async(operations, appends)
    return {
        "bootstrap_rate": boot_rate,
        "bootstrap_cpu_us": boot_cpu,
        "append_rate": append_rate,
        "append_cpu_us": append_cpu,
    }


def run_write_side(src: str | None, backend: str, operations: int, pg_url: str) -> dict[str, float]:
    """Run ``write_side`` in a child process whose runstate is imported from ``src``."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    command = [sys.executable, __file__, "--write-side", backend, "--ops", str(operations)]
    command += ["--pg-url", pg_url]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def _write_side_main(backend: str, operations: int, pg_url: str) -> None:
    import runstate

    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            result = await write_side(f"sqlite:///{Path(tmp) / 'w.db'}", operations)
    else:
        schema = f"bench_w_{uuid.uuid4().hex[:10]}"
        try:
            result = await write_side(f"{pg_url}?schema={schema}", operations)
        finally:
            await _drop_schema(pg_url, schema)
    result["runstate_file"] = runstate.__file__  # type: ignore[assignment]
    print(json.dumps(result))


async def _drop_schema(pg_url: str, schema: str) -> None:
    connection = await asyncpg.connect(pg_url)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def query_part(args: argparse.Namespace) -> None:
    """Fill each store and time the first page of each status."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalog.db"
        async with open_store(f"sqlite:///{path}"):
            pass  # creates and migrates the file
        seconds = fill_sqlite(path, args.runs, args.batch)
        print(f"sqlite: filled {args.runs} runs in {seconds:.0f} s", flush=True)
        medians = await time_queries(f"sqlite:///{path}", args.calls, args.runs)
        rows += [("sqlite", k, f"{v:.2f}") for k, v in medians.items()]
    schema = f"bench_c_{uuid.uuid4().hex[:10]}"
    url = f"{args.pg_url}?schema={schema}"
    try:
        async with open_store(url):
            pass
        seconds = await fill_postgres(args.pg_url, schema, args.runs, args.batch)
        print(f"postgres: filled {args.runs} runs in {seconds:.0f} s", flush=True)
        medians = await time_queries(url, args.calls, args.runs)
        rows += [("postgres", k, f"{v:.2f}") for k, v in medians.items()]
    finally:
        await _drop_schema(args.pg_url, schema)
    print_table(
        f"first page (50) of query_runs by status, {args.runs} runs, median of {args.calls} (ms)",
        ("store", "status", "ms"),
        rows,
    )


def write_part(args: argparse.Namespace) -> None:
    """Bootstrap/append throughput with the summary (this tree) and without (the baseline)."""
    rows = []
    for backend in ("sqlite", "postgres"):
        sides: dict[str, list[dict[str, float]]] = {"summary": [], "baseline": []}
        for _ in range(args.rounds):
            sides["summary"].append(run_write_side(None, backend, args.ops, args.pg_url))
            sides["baseline"].append(
                run_write_side(args.baseline_src, backend, args.ops, args.pg_url)
            )
        print(
            backend,
            "imports:",
            sides["summary"][0]["runstate_file"],
            "vs",
            sides["baseline"][0]["runstate_file"],
            flush=True,
        )
        for metric in ("bootstrap_rate", "bootstrap_cpu_us", "append_rate", "append_cpu_us"):
            ours = statistics.median(r[metric] for r in sides["summary"])
            base = statistics.median(r[metric] for r in sides["baseline"])
            rows.append((backend, metric, f"{ours:.1f}", f"{base:.1f}", f"{ours / base:.3f}"))
    print_table(
        f"writes, single client, {args.ops} ops per side, median of {args.rounds} rounds",
        ("store", "metric", "summary", "baseline", "ratio"),
        rows,
    )


def main() -> None:
    """Parse the arguments and run the requested parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--calls", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=1500)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--baseline-src", help="a src/ directory of runstate without the summary")
    parser.add_argument("--skip-queries", action="store_true")
    parser.add_argument("--write-side", choices=("sqlite", "postgres"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_side:
        asyncio.run(_write_side_main(args.write_side, args.ops, args.pg_url))
        return
    if not args.skip_queries:
        asyncio.run(query_part(args))
    if args.baseline_src:
        write_part(args)


if __name__ == "__main__":
    main()
