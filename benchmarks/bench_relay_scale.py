"""Drain throughput of 1, 2 and 4 `runstate relay` processes sharing one PostgreSQL store.

Each round seeds a backlog, holds it back (``available_at`` in the future) while the relay
processes start and connect, then releases it and times until the outbox is empty. The sink
is a JetStream stream of the round's own on the local NATS server. Reported: events/s, the
ratio to one process measured in the same run, and the relays' CPU per event (their
utime+stime during the drain, from /proc), medians of ``--repeat`` rounds.

    .venv/bin/python -m benchmarks.bench_relay_scale --events 40000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import nats
import nats.js.errors

from benchmarks._report import print_table
from runstate import OutboxStore, RunBootstrapInput, RunEventInput, RunMetadata, open_store

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
NATS_URL = "nats://127.0.0.1:4222"


def relay_cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def seed(url: str, runs: int, events: int) -> None:
    """Write ``events`` events over ``runs`` runs, every run's events in one bootstrap."""
    per_run = events // runs
    async with open_store(url) as store:
        for start in range(0, runs, 50):
            await asyncio.gather(
                *(
                    store.bootstrap_run_tx(
                        RunBootstrapInput(
                            metadata=RunMetadata(run_id=f"run-{i:05d}", workflow="bench"),
                            first_events=[
                                RunEventInput(type="Step", payload={"n": n}) for n in range(per_run)
                            ],
                        )
                    )
                    for i in range(start, min(runs, start + 50))
                )
            )


async def wait_connected(admin: asyncpg.Connection, names: list[str]) -> None:
    """Until every relay process has a session open (named after it) on the server."""
    deadline = time.monotonic() + 60
    while True:
        found = await admin.fetchval(
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity "
            "WHERE application_name = ANY($1::text[])",
            names,
        )
        if found == len(names):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("relay processes did not connect within 60 s")
        await asyncio.sleep(0.1)


async def drain_round(args: argparse.Namespace, processes: int) -> tuple[float, float]:
    """One round with ``processes`` relays: events/s and relay CPU µs per event."""
    suffix = uuid.uuid4().hex[:10]
    schema, stream = f"bench_scale_{suffix}", f"BENCH_SCALE_{suffix}"
    url = f"{POSTGRES}?schema={schema}"
    admin = await asyncpg.connect(POSTGRES)
    nc = await nats.connect(NATS_URL)
    relays: list[subprocess.Popen[bytes]] = []
    try:
        await seed(url, args.runs, args.events)
        # Held back while the relays start: their start-up is not drain time.
        await admin.execute(
            f"UPDATE \"{schema}\".run_outbox SET available_at = now() + interval '1 hour'"  # noqa: S608
        )
        sink = f"{NATS_URL}?subject=bench.scale.{suffix}&stream={stream}"
        names = [f"bench-relay-{suffix}-{i}" for i in range(processes)]
        for name in names:
            relays.append(
                subprocess.Popen(  # noqa: ASYNC220 - before the timed part; returns at once
                    [
                        *(sys.executable, "-m", "runstate.cli", "relay"),
                        *("--url", f"{url}&application_name={name}", "--sink", sink),
                        *("--workers", str(args.workers), "--batch-size", str(args.batch_size)),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
        await wait_connected(admin, names)
        await asyncio.sleep(1.0)  # the sinks connect and create the stream
        cpu_before = sum(relay_cpu_seconds(r.pid) for r in relays)
        started = time.perf_counter()
        await admin.execute(f'UPDATE "{schema}".run_outbox SET available_at = NULL')  # noqa: S608
        await admin.execute("SELECT pg_notify('runstate_outbox', $1)", schema)
        async with open_store(url) as store:
            assert isinstance(store, OutboxStore)
            while True:
                stats = await store.outbox_stats()
                if stats.pending == 0 and stats.in_flight == 0:
                    break
                await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu = sum(relay_cpu_seconds(r.pid) for r in relays) - cpu_before
        info = await nc.jetstream().stream_info(stream)
        assert info.state.messages == args.events, (info.state.messages, args.events)
        return args.events / elapsed, cpu / args.events * 1e6
    finally:
        for relay in relays:
            if relay.poll() is None:
                os.kill(relay.pid, signal.SIGTERM)
        for relay in relays:
            relay.wait(30)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
        await nc.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--workers", type=int, default=2, help="workers per relay process")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    rates: dict[int, list[float]] = {n: [] for n in counts}
    cpus: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(args.repeat):
        for n in counts:  # interleaved, so drift in the machine's load hits every count alike
            rate, cpu = await drain_round(args, n)
            rates[n].append(rate)
            cpus[n].append(cpu)
    base = statistics.median(rates[counts[0]])
    rows = [
        (
            n,
            statistics.median(rates[n]),
            statistics.median(rates[n]) / base,
            statistics.median(cpus[n]),
            ", ".join(f"{r:,.0f}" for r in rates[n]),
        )
        for n in counts
    ]
    print_table(
        f"drain {args.events:,} events ({args.runs} runs) from PostgreSQL into JetStream, "
        f"{args.workers} worker(s) x batch {args.batch_size} per process, "
        f"medians of {args.repeat} rounds",
        ["processes", "events/s", f"ratio to {counts[0]}", "relay CPU us/event", "rounds"],
        rows,
    )


if __name__ == "__main__":
    asyncio.run(main())
