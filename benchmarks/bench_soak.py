"""Soak: a long stream of appends into PostgreSQL while a relay delivers to NATS JetStream.

Reports, per window of events (default 100k): append latency p50/p99 and write throughput;
the relay's resident memory over time (it runs in its own process and reports VmRSS every
second: it must stay flat); and the outbox backlog over time until it drains to zero. Not
run in CI.

    .venv/bin/python benchmarks/bench_soak.py                      # 1,000,000 events
    .venv/bin/python benchmarks/bench_soak.py --events 20000 --window 5000   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import sys
import time
import uuid
from typing import Any

import asyncpg
import nats
import nats.js.errors

from runstate import OutboxStore, RunBootstrapInput, RunEventInput, RunMetadata, open_store

RELAY_PROCESS = """
import asyncio, json, sys, time
from runstate import open_store
from runstate.relay import Relay
from runstate.relay.metrics import RelayMetrics
from runstate.sinks import open_sink

store_url, sink_url, workers, batch = sys.argv[1:5]

def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

async def main():
    async with open_store(store_url) as store, open_sink(sink_url) as sink:
        relay = Relay(store, sink, workers=int(workers), batch_size=int(batch),
                      poll_interval=0.2, metrics=RelayMetrics(export=False))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(2, relay.stop)
        loop.add_signal_handler(15, relay.stop)
        task = asyncio.ensure_future(relay.run_forever())
        print(json.dumps({"ready": True}), flush=True)
        while not task.done():
            print(json.dumps({"t": time.time(), "rss_kib": rss_kib()}), flush=True)
            await asyncio.wait([task], timeout=1.0)
        report = task.result()
        print(json.dumps({"t": time.time(), "rss_kib": rss_kib(),
                          "delivered": report.delivered}), flush=True)

asyncio.run(main())
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def read_relay(process: asyncio.subprocess.Process, samples: list[dict[str, Any]]) -> None:
    assert process.stdout is not None
    while line := await process.stdout.readline():
        samples.append(json.loads(line))


async def main(args: argparse.Namespace) -> None:
    schema = f"soak_{uuid.uuid4().hex[:10]}"
    store_url = f"{args.url}?schema={schema}"
    stream = f"RS_SOAK_{uuid.uuid4().hex[:10]}"
    sink_url = f"{args.nats}?subject=soak.{{workflow}}&stream={stream}"
    store = await open_store(store_url, pool_size=args.writers)
    assert isinstance(store, OutboxStore)
    run_ids = [f"soak-{index}" for index in range(args.runs)]
    for run_id in run_ids:
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="soak"),
                first_events=[RunEventInput(type="RunQueued")],
            )
        )
    relay = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RELAY_PROCESS,
        store_url,
        sink_url,
        str(args.relay_workers),
        str(args.relay_batch),
        stdout=asyncio.subprocess.PIPE,
    )
    assert relay.stdout is not None
    samples: list[dict[str, Any]] = [json.loads(await relay.stdout.readline())]
    reader = asyncio.create_task(read_relay(relay, samples))
    started = time.time()
    latencies: list[tuple[int, float]] = []  # (event number, seconds)
    backlog: list[tuple[float, int]] = []
    written = len(run_ids)
    payload = {"data": "x" * args.payload_bytes}

    async def writer(index: int) -> None:
        nonlocal written
        n = index
        while written < args.events:
            run_id = run_ids[n % len(run_ids)]
            n += args.writers
            events = [RunEventInput(type="Step", payload=payload) for _ in range(args.batch)]
            begin = time.perf_counter()
            await store.append_and_enqueue_tx(run_id, events)
            latencies.append((written, time.perf_counter() - begin))
            written += args.batch

    async def watch_backlog() -> None:
        while True:
            stats = await store.outbox_stats()
            backlog.append((time.time() - started, stats.pending + stats.in_flight))
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch_backlog())
    await asyncio.gather(*(writer(i) for i in range(args.writers)))
    write_seconds = time.time() - started
    while True:
        stats = await store.outbox_stats()
        if stats.pending + stats.in_flight == 0:
            break
        await asyncio.sleep(0.5)
    drained_at = time.time() - started
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    backlog.append((drained_at, 0))
    relay.send_signal(signal.SIGTERM)
    await relay.wait()
    await reader
    await store.close()

    nc = await nats.connect(args.nats.split("?")[0])
    try:
        info = await nc.jetstream().stream_info(stream)
        in_stream = info.state.messages
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()
    admin = await asyncpg.connect(args.url)
    try:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await admin.close()

    print(f"events written: {written:,} in {write_seconds:.1f}s ({written / write_seconds:,.0f}/s)")
    print(f"appends: {len(latencies):,} of {args.batch} event(s), {args.writers} writers")
    print("\nappend latency per window (ms):")
    print(f"{'events':>12} {'p50':>8} {'p99':>8} {'max':>8}")
    for start in range(0, written, args.window):
        window = [s * 1000 for n, s in latencies if start <= n < start + args.window]
        if window:
            print(
                f"{start + args.window:>12,} {statistics.median(window):>8.2f}"
                f" {percentile(window, 0.99):>8.2f} {max(window):>8.2f}"
            )
    rss = [(s["t"] - started, s["rss_kib"] / 1024) for s in samples if "rss_kib" in s]
    print("\nrelay resident memory (MiB) over time:")
    step = max(1, len(rss) // 12)
    for t, mib in rss[::step] + rss[-1:]:
        print(f"  t={t:7.1f}s  {mib:7.1f}")
    values = [mib for t, mib in rss if t > 10] or [mib for _, mib in rss]
    print(f"  after warm-up: min {min(values):.1f}, max {max(values):.1f} MiB")
    print("\noutbox backlog (pending + in flight) over time:")
    step = max(1, len(backlog) // 12)
    for t, pending in backlog[::step] + backlog[-1:]:
        print(f"  t={t:7.1f}s  {pending:>10,}")
    delivered = next((s["delivered"] for s in reversed(samples) if "delivered" in s), None)
    print(f"\nbacklog drained to zero at t={drained_at:.1f}s; relay delivered {delivered:,};")
    print(f"JetStream stream holds {in_stream:,} messages (expected {written:,})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="events per append")
    parser.add_argument("--payload-bytes", type=int, default=100)
    parser.add_argument("--relay-workers", type=int, default=2)
    parser.add_argument("--relay-batch", type=int, default=500)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    asyncio.run(main(parser.parse_args()))
