"""Relay throughput and latency into NATS JetStream.

drain:   seed a backlog, time the relay draining it into JetStream, next to a baseline of nats-py
         publishing the same pre-built envelopes (same batches, acks awaited per batch) with
         publish_async, and a stricter one publishing them as the NATS sink does (reply
         subjects, one subscription for the acknowledgements).
latency: append events at a steady rate; measure commit-to-broker latency (a core NATS
         subscriber sees each message as JetStream stores it) with store wake-ups and with pure
         polling; with --relay-process, also with the relay in another process (`runstate
         relay`, which learns of commits as any other process does: SQLite's data_version
         polling, PostgreSQL's LISTEN/NOTIFY). Needs a database file or server store URL.

    .venv/bin/python benchmarks/bench_relay.py --mode drain --events 100000 --repeat 3
    .venv/bin/python benchmarks/bench_relay.py --mode latency --rate 1000 --seconds 10
    .venv/bin/python benchmarks/bench_relay.py --store-url \
        'postgresql://postgres@127.0.0.1:5432/test?schema=bench_relay'
    .venv/bin/python benchmarks/bench_relay.py --mode latency --relay-process \
        --store-url sqlite:////tmp/bench_relay.db

A sqlite:/// store's file (with its -wal and -shm) is deleted before and after every round.
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
from typing import Any

import nats
import nats.js.errors

from runstate import OutboxStore, RunBootstrapInput, RunEventInput, RunMetadata, open_store
from runstate.relay import Relay
from runstate.relay.metrics import RelayMetrics
from runstate.sinks.cloudevents import encode_cloudevent
from runstate.sinks.nats import NatsSink

NATS_URL = "nats://127.0.0.1:4222"


async def reset_store(url: str) -> None:
    """Drop the benchmark schema or SQLite file so every round starts empty."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///").split("?", 1)[0]
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)
        return
    if not url.startswith(("postgresql://", "postgres://")) or "schema=" not in url:
        return
    import asyncpg

    base, _, query = url.partition("?")
    schema = dict(part.split("=", 1) for part in query.split("&"))["schema"]
    connection = await asyncpg.connect(base)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def store_url_for_round(url: str) -> str:
    # A memory:// store is private to its object unless named; name it so nothing leaks.
    return f"memory://bench-{uuid.uuid4().hex}" if url == "memory://" else url


async def seed(store: Any, runs: int, events: int, prefix: str) -> None:
    per_run = events // runs
    for index in range(runs):
        first = [
            RunEventInput(type="Step", payload={"n": n, "pad": "x" * 64}) for n in range(per_run)
        ]
        metadata = RunMetadata(run_id=f"{prefix}-{index}", workflow="bench")
        await store.bootstrap_run_tx(RunBootstrapInput(metadata=metadata, first_events=first))


class Stream:
    """A unique JetStream stream for one round, deleted afterwards."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.name = f"BENCH_{suffix}"
        self.subject = f"bench.{suffix}"

    async def __aenter__(self) -> Stream:
        self.nc = await nats.connect(NATS_URL)
        self.js = self.nc.jetstream()
        await self.js.add_stream(name=self.name, subjects=[self.subject])
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.delete_stream(self.name)
        await self.nc.close()


async def drain_round(args: argparse.Namespace) -> tuple[float, float, float]:
    url = store_url_for_round(args.store_url)
    await reset_store(url)
    async with open_store(url) as store:
        assert isinstance(store, OutboxStore)
        await seed(store, args.runs, args.events, "drain")
        async with Stream() as stream:
            sink = NatsSink(NATS_URL, subject=stream.subject, stream=stream.name)
            await sink.open()
            relay = Relay(
                store,
                sink,
                workers=args.workers,
                batch_size=args.batch_size,
                metrics=RelayMetrics(export=False),
            )
            started = time.perf_counter()
            report = await relay.run_once()
            relay_seconds = time.perf_counter() - started
            await sink.close()
            assert report.delivered == args.events, report
            # Baseline: the same envelopes, pre-built, published by nats-py directly.
            envelopes = await baseline_envelopes(args)
        async with Stream() as stream:
            started = time.perf_counter()
            for offset in range(0, len(envelopes), args.batch_size):
                futures = [
                    await stream.js.publish_async(
                        stream.subject, body, headers={"Nats-Msg-Id": message_id}
                    )
                    for message_id, body in envelopes[offset : offset + args.batch_size]
                ]
                await asyncio.gather(*futures)
            baseline_seconds = time.perf_counter() - started
        async with Stream() as stream:
            replies_seconds = await publish_with_replies(stream, envelopes, args.batch_size)
    await reset_store(url)
    return (
        args.events / relay_seconds,
        args.events / baseline_seconds,
        args.events / replies_seconds,
    )


async def publish_with_replies(
    stream: Stream, envelopes: list[tuple[str, bytes]], batch_size: int
) -> float:
    """Seconds for nats-py to publish ``envelopes`` batch by batch as the NATS sink does."""
    # Reply subjects and one subscription for every acknowledgement: a stricter baseline than
    # publish_async, which costs a future and a parsed acknowledgement per message.
    prefix = f"{stream.nc.new_inbox()}."
    left = 0
    batch_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_ack(msg: Any) -> None:
        nonlocal left
        assert b'"error"' not in msg.data, msg.data
        left -= 1
        if left == 0:
            batch_done.set_result(None)

    subscription = await stream.nc.subscribe(f"{prefix}*", cb=on_ack)
    started = time.perf_counter()
    for offset in range(0, len(envelopes), batch_size):
        batch = envelopes[offset : offset + batch_size]
        batch_done = asyncio.get_running_loop().create_future()
        left = len(batch)
        for index, (message_id, body) in enumerate(batch):
            await stream.nc.publish(
                stream.subject, body, reply=f"{prefix}{index}", headers={"Nats-Msg-Id": message_id}
            )
        await asyncio.wait_for(batch_done, 30)
    seconds = time.perf_counter() - started
    await subscription.unsubscribe()
    return seconds


async def baseline_envelopes(args: argparse.Namespace) -> list[tuple[str, bytes]]:
    """Build the same envelopes from an identically seeded in-memory outbox."""
    from runstate import MemoryStore

    copy = MemoryStore()
    await seed(copy, args.runs, args.events, "drain")
    records = await copy.claim_outbox_batch(owner="b", limit=args.events, lease_seconds=60)
    return [(record.message_id, encode_cloudevent(record)) for record in records]


def start_relay_process(
    args: argparse.Namespace, url: str, stream: Stream
) -> subprocess.Popen[bytes]:
    """`runstate relay` in a process of its own, on the same store and stream."""
    sink = f"{NATS_URL}?subject={stream.subject}&stream={stream.name}"
    command = [sys.executable, "-m", "runstate.cli", "relay", "--url", url, "--sink", sink]
    command += ["--workers", str(args.workers), "--batch-size", str(args.batch_size)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


async def stop_relay_process(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    for _ in range(500):
        if process.poll() is not None:
            return
        await asyncio.sleep(0.01)
    process.kill()
    process.wait()


def in_process_relay(
    args: argparse.Namespace, store: OutboxStore, sink: NatsSink, *, wakeups: bool
) -> Relay:
    """The relay of this process: woken by the store's commits, or polling only."""
    target: Any = store if wakeups else PollingStore(store, args.poll)
    return Relay(
        target,
        sink,
        workers=args.workers,
        batch_size=args.batch_size,
        poll_interval=1.0 if wakeups else args.poll,
        metrics=RelayMetrics(export=False),
    )


async def latency_round(args: argparse.Namespace, *, mode: str) -> tuple[float, float, int]:
    """One round; ``mode``: "wake-ups", "polling" or "process" (the relay in another process)."""
    wakeups = mode == "wake-ups"
    url = store_url_for_round(args.store_url)
    await reset_store(url)
    async with open_store(url) as store, Stream() as stream:
        assert isinstance(store, OutboxStore)
        runs = [f"lat-{index}" for index in range(100)]
        for run_id in runs:
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_id, workflow="bench"),
                    first_events=[RunEventInput(type="RunQueued")],
                )
            )
        committed: dict[str, float] = {}
        received: dict[str, float] = {}

        async def on_message(msg: Any) -> None:
            # Matched after the run: with wake-ups a message can arrive before the append returns.
            message_id = msg.headers.get("Nats-Msg-Id") if msg.headers else None
            received.setdefault(message_id or "", time.perf_counter())

        subscription = await stream.nc.subscribe(stream.subject, cb=on_message)
        relay: Relay | None = None
        process = start_relay_process(args, url, stream) if mode == "process" else None
        if process is None:
            sink = NatsSink(NATS_URL, subject=stream.subject, stream=stream.name)
            await sink.open()
            relay = in_process_relay(args, store, sink, wakeups=wakeups)
            task = asyncio.create_task(relay.run_forever())
        # Let the bootstrap records drain (and a relay process start).
        for _ in range(1000):
            if len(received) >= len(runs):
                break
            await asyncio.sleep(0.01)
        total = int(args.rate * args.seconds)
        tick = 0.01
        per_tick = max(1, int(args.rate * tick))
        start = time.perf_counter()
        sent = 0
        while sent < total:
            for _ in range(per_tick):
                run_id = runs[sent % len(runs)]
                result = await store.append_and_enqueue_tx(run_id, [RunEventInput(type="Step")])
                event = result.appended[0]
                committed[f"{run_id}:{event.seq}"] = time.perf_counter()
                sent += 1
            delay = start + (sent / args.rate) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        for _ in range(1000):
            if all(message_id in received for message_id in committed):
                break
            await asyncio.sleep(0.01)
        latencies = [
            max(0.0, received[message_id] - at)
            for message_id, at in committed.items()
            if message_id in received
        ]
        if relay is not None:
            relay.stop()
            await task
            await sink.close()
        if process is not None:
            await stop_relay_process(process)
        await subscription.unsubscribe()
    await reset_store(url)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    return p50, p99, len(latencies)


class PollingStore:
    """The store without wake-ups: the relay finds new records only by polling."""

    def __init__(self, store: Any, interval: float) -> None:
        self._store = store
        self._interval = interval

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def wait_for_outbox(self, timeout: float) -> None:
        await asyncio.sleep(min(timeout, self._interval))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-url", default="memory://")
    parser.add_argument("--mode", choices=["drain", "latency", "all"], default="all")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--poll", type=float, default=0.1, help="polling interval, no wake-ups")
    parser.add_argument(
        "--relay-process", action="store_true", help="latency also with `runstate relay` apart"
    )
    args = parser.parse_args()
    print(f"store {args.store_url}  workers {args.workers}  batch {args.batch_size}")
    if args.mode in {"drain", "all"}:
        rounds = [await drain_round(args) for _ in range(args.repeat)]
        relay_rate = statistics.median(r for r, _, _ in rounds)
        base_rate = statistics.median(b for _, b, _ in rounds)
        replies_rate = statistics.median(p for _, _, p in rounds)
        for index, (r, b, p) in enumerate(rounds, 1):
            print(
                f"  drain round {index}: relay {r:,.0f} ev/s, baseline {b:,.0f} ev/s, "
                f"with replies {p:,.0f} ev/s"
            )
        print(
            f"drain {args.events:,} events / {args.runs:,} runs: relay {relay_rate:,.0f} ev/s, "
            f"nats-py baseline {base_rate:,.0f} ev/s, ratio {relay_rate / base_rate:.2f} (medians)"
        )
        print(
            f"  nats-py with reply subjects, as the sink publishes: {replies_rate:,.0f} ev/s, "
            f"ratio {relay_rate / replies_rate:.2f} (medians)"
        )
    if args.mode in {"latency", "all"}:
        modes = ["wake-ups", "polling"] + (["process"] if args.relay_process else [])
        for mode in modes:
            label = {
                "wake-ups": "wake-ups",
                "polling": f"polling {args.poll * 1000:.0f} ms",
                "process": "relay in another process",
            }[mode]
            rounds_l = [await latency_round(args, mode=mode) for _ in range(args.repeat)]
            p50 = statistics.median(r[0] for r in rounds_l)
            p99 = statistics.median(r[1] for r in rounds_l)
            print(
                f"latency {args.rate:,.0f} ev/s x {args.seconds:g}s, {label}: "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (medians of {args.repeat}; "
                f"received {[r[2] for r in rounds_l]})"
            )


if __name__ == "__main__":
    asyncio.run(main())
