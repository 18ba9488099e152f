"""The relay under faults: broker outages mid-stream, a SIGKILLed relay, two relay processes
on one database, and a flaky webhook. Nothing is lost, per-run order holds at the consumer,
and a duplicate only ever repeats a message under its own id.

``tests/test_relay.py`` covers in-process retries, leases and two Relay objects in one
process; ``tests/test_sinks.py`` covers a sink pointed at a closed port and a single 500.
Here the link to a live NATS/RabbitMQ is cut and restored *while* the relay streams (through
``tests/_proxy.py``), and relays are separate OS processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import textwrap
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from _proxy import TcpProxy
from conftest import (
    POSTGRES_URL,
    drop_postgres_schema,
    loopback_server,
    require_service,
    standard_webhook_signed,
    unique_schema,
)
from runstate import (
    MemoryStore,
    OutboxStore,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    RunStateStore,
    open_store,
)
from runstate.relay import Relay
from runstate.relay.metrics import RelayMetrics
from runstate.sinks import open_sink


def check_delivery(
    received: Iterable[dict[str, Any]], expected: dict[str, int], *, exactly_once: bool = False
) -> int:
    """Nothing lost, first deliveries in per-run order, duplicates identical; return dupes."""
    firsts: dict[str, list[int]] = defaultdict(list)
    seen: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for envelope in received:
        assert envelope["id"] == f"{envelope['subject']}:{envelope['seq']}"
        if envelope["id"] in seen:
            assert envelope == seen[envelope["id"]], "a duplicate differs from the original"
            duplicates += 1
            continue
        seen[envelope["id"]] = envelope
        firsts[envelope["subject"]].append(envelope["seq"])
    assert dict(firsts) == {run: list(range(1, n + 1)) for run, n in expected.items()}
    if exactly_once:
        assert duplicates == 0
    return duplicates


async def seed(store: RunStateStore, runs: int, events: int, prefix: str) -> dict[str, int]:
    run_ids = [f"{prefix}-{index}" for index in range(runs)]
    for run_id in run_ids:
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf"),
                first_events=[RunEventInput(type="RunQueued", payload={"n": 1})],
            )
        )
    for n in range(2, events + 1):
        for run_id in run_ids:
            await store.append_and_enqueue_tx(
                run_id, [RunEventInput(type="Step", payload={"n": n, "text": "é\u2028"})]
            )
    return dict.fromkeys(run_ids, events)


async def wait_drained(store: OutboxStore, task: asyncio.Task[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert not task.done(), task
        stats = await store.outbox_stats()
        if stats.pending == stats.in_flight == stats.dead == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"outbox not drained: {await store.outbox_stats()}")


def quiet() -> RelayMetrics:
    return RelayMetrics(export=False)


# -- broker outages mid-stream, through a proxy we can cut ---------------------------------


async def _stream_through_outage(
    sink_url: str, proxy: TcpProxy, *, runs: int, events: int, outage: float
) -> dict[str, int]:
    """Write while a relay streams to the sink; cut the proxy mid-stream, then restore it."""
    store = MemoryStore()
    expected = await seed(store, runs, 1, f"out-{uuid.uuid4().hex[:6]}")
    async with open_sink(sink_url) as sink:
        relay = Relay(
            store,
            sink,
            workers=2,
            batch_size=8,
            poll_interval=0.05,
            backoff_base=0.05,
            backoff_max=0.5,
            max_attempts=1000,
            metrics=quiet(),
        )
        relaying = asyncio.create_task(relay.run_forever())
        try:
            for n in range(2, events + 1):
                for run_id in expected:
                    await store.append_and_enqueue_tx(
                        run_id, [RunEventInput(type="Step", payload={"n": n})]
                    )
                    expected[run_id] = n
                if n == events // 3:
                    await proxy.cut()
                    cut_at = time.monotonic()
                if n == 2 * events // 3:
                    await asyncio.sleep(max(0.0, outage - (time.monotonic() - cut_at)))
                    await proxy.restore()
                await asyncio.sleep(0.01)
            await wait_drained(store, relaying, 60)
        finally:
            relay.stop()
            report = await asyncio.wait_for(relaying, 30)
    assert report.retried > 0, "the outage went unnoticed"
    assert proxy.connections >= 2, "the sink never reconnected through the proxy"
    return expected


async def test_nats_outage_mid_stream_loses_nothing_and_keeps_order(
    nats_stream: tuple[str, str],
) -> None:
    import nats

    stream, prefix = nats_stream
    async with TcpProxy("127.0.0.1", 4222) as proxy:
        url = (
            f"nats://127.0.0.1:{proxy.port}?subject={prefix}.{{workflow}}&stream={stream}&timeout=1"
        )
        expected = await _stream_through_outage(url, proxy, runs=6, events=30, outage=1.5)
    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        received = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(stream, seq)
            envelope = json.loads(message.data or b"")
            assert (message.headers or {})["Nats-Msg-Id"] == envelope["id"]
            received.append(envelope)
    finally:
        await nc.close()
    # JetStream drops re-sent messages by Nats-Msg-Id: the stream holds each event once.
    check_delivery(received, expected, exactly_once=True)


async def test_rabbitmq_outage_mid_stream_loses_nothing_and_keeps_order(
    rabbitmq_exchange: tuple[str, Any],
) -> None:
    import aio_pika

    exchange_name, queue = rabbitmq_exchange
    async with TcpProxy("127.0.0.1", 5672) as proxy:
        url = (
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"
            f"?exchange={exchange_name}&routing_key=runs.{{workflow}}&timeout=2"
        )
        expected = await _stream_through_outage(url, proxy, runs=4, events=24, outage=1.5)
    received = []
    while True:
        try:
            message = await queue.get(timeout=2)
        except aio_pika.exceptions.QueueEmpty:
            break
        await message.ack()
        envelope = json.loads(message.body)
        assert message.message_id == envelope["id"]
        received.append(envelope)
    check_delivery(received, expected)


# -- relays as OS processes, a flaky webhook receiver ----------------------------------------


@dataclass
class Receiver:
    """An HTTP/1.1 webhook receiver: optional delay, random 500s, signature checks."""

    secret: str = "s3cr3t-hook-key"
    fail_rate: float = 0.0
    delay: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    relays: set[str] = field(default_factory=set)
    bad_signatures: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) != b"\r\n":
                if not line:
                    return  # the sender died mid-headers: no request arrived
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if not standard_webhook_signed(self.secret, body, headers):
                self.bad_signatures += 1
                status = 401
            elif self.rng.random() < self.fail_rate:
                status = 500
                self.refused.append(json.loads(body)["id"])
            else:
                status = 200
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.accepted.append(json.loads(body))
                self.relays.add(headers.get("x-relay", ""))
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    async with loopback_server(state.handle) as port:
        state.port = port
        yield state


_RELAY_PROCESS = textwrap.dedent(
    """
    import asyncio, sys, time
    from runstate import open_store
    from runstate.relay import Relay
    from runstate.relay.metrics import RelayMetrics
    from runstate.sinks import open_sink

    store_url, hook, secret, name, start, lease = sys.argv[1:7]

    async def main():
        async with open_store(store_url) as store:
            async with open_sink(hook, secret=secret, headers={"X-Relay": name}) as sink:
                relay = Relay(store, sink, workers=2, batch_size=10, lease_seconds=float(lease),
                              metrics=RelayMetrics(export=False))
                print("ready", flush=True)
                await asyncio.sleep(max(0.0, float(start) - time.time()))
                report = await relay.run_once()
                print(report.delivered, flush=True)

    asyncio.run(main())
    """
)


async def _start_relay(
    store_url: str, receiver: Receiver, name: str, start: float, lease: float
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RELAY_PROCESS,
        store_url,
        f"http://127.0.0.1:{receiver.port}/hook",
        receiver.secret,
        name,
        str(start),
        str(lease),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if line.strip() != b"ready":
        _, err = await process.communicate()
        raise AssertionError(f"relay did not start: {err.decode()}")
    return process


@pytest.mark.slow
async def test_sigkilled_relay_mid_batch_next_relay_delivers_everything(
    tmp_path: Path, receiver: Receiver
) -> None:
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    async with open_store(url) as store:
        expected = await seed(store, runs=20, events=10, prefix="kill")
    receiver.delay = 0.01  # slow enough that the kill lands with requests in flight
    process = await _start_relay(url, receiver, "doomed", time.time(), lease=1.0)
    try:
        deadline = time.monotonic() + 60
        while len(receiver.accepted) < 40:
            assert time.monotonic() < deadline, "the relay delivered too little"
            assert process.returncode is None
            await asyncio.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        _, err = await process.communicate()
    assert process.returncode == -signal.SIGKILL, err.decode()
    first_relay = len(receiver.accepted)
    assert first_relay < 200, "the relay finished before the kill"
    await asyncio.sleep(1.2)  # the dead relay's leases expire
    async with open_store(url) as store:
        assert isinstance(store, OutboxStore)
        hook = f"http://127.0.0.1:{receiver.port}/hook"
        async with open_sink(hook, secret=receiver.secret) as sink:
            report = await Relay(store, sink, workers=2, metrics=quiet()).run_once()
        stats = await store.outbox_stats()
    assert (stats.pending, stats.in_flight, stats.dead) == (0, 0, 0)
    assert report.delivered > 0
    check_delivery(receiver.accepted, expected)
    assert receiver.bad_signatures == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_two_relay_processes_on_one_database_keep_per_run_order(
    tmp_path: Path, receiver: Receiver, backend: str
) -> None:
    schema = ""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'two.db'}"
    else:
        require_service("PostgreSQL", "127.0.0.1", 5432)
        schema = unique_schema()
        url = f"{POSTGRES_URL}?schema={schema}"
    try:
        async with open_store(url) as store:
            expected = await seed(store, runs=24, events=8, prefix="two")
        receiver.delay = 0.002
        start = time.time() + 1.5
        processes = [
            await _start_relay(url, receiver, f"relay-{i}", start, lease=30.0) for i in range(2)
        ]
        for process in processes:
            _, err = await asyncio.wait_for(process.communicate(), 90)
            assert process.returncode == 0, err.decode()
        # No crash: every event exactly once, in per-run order, from both relays.
        check_delivery(receiver.accepted, expected, exactly_once=True)
        assert receiver.relays == {"relay-0", "relay-1"}
        assert receiver.bad_signatures == 0
    finally:
        if schema:
            await drop_postgres_schema(schema)


async def test_webhook_answering_500_then_200_loses_nothing(receiver: Receiver) -> None:
    receiver.fail_rate = 0.3
    store = MemoryStore()
    expected = await seed(store, runs=8, events=3, prefix="flaky")
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    async with open_sink(hook, secret=receiver.secret, concurrency=4) as sink:
        relay = Relay(
            store,
            sink,
            workers=2,
            batch_size=6,
            poll_interval=0.05,
            backoff_base=0.005,
            backoff_max=0.05,
            max_attempts=1000,
            metrics=quiet(),
        )
        relaying = asyncio.create_task(relay.run_forever())
        try:
            for n in range(4, 16):
                for run_id in expected:
                    await store.append_and_enqueue_tx(
                        run_id, [RunEventInput(type="Step", payload={"n": n})]
                    )
                    expected[run_id] = n
                await asyncio.sleep(0.005)
            await wait_drained(store, relaying, 60)
        finally:
            relay.stop()
            await asyncio.wait_for(relaying, 30)
    assert len(receiver.refused) > 10, "the receiver never failed"
    # A 500 is not an acceptance, so every event is accepted exactly once, in order.
    check_delivery(receiver.accepted, expected, exactly_once=True)
    assert receiver.bad_signatures == 0
