"""A 3-node JetStream cluster on loopback: 100,000 events drained while a node dies and returns.

The relay is a `runstate relay` process given all three servers; the stream is created by the
sink with three replicas. The node the relay is connected to is SIGKILLed mid-drain and
restarted on its own store dir later. The consumer then reads the whole stream.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _processes import NatsCluster, find_nats_server, nats_cluster, start_relay
from conftest import IN_CI
from runstate import RunBootstrapInput, RunEventInput, RunMetadata, open_store
from runstate.store import OutboxStore

RUNS = 1000
EVENTS_PER_RUN = 100
TOTAL = RUNS * EVENTS_PER_RUN
DUPLICATE_WINDOW = 120.0

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nats-server processes with routes to each other, JetStream on, own store dirs."""
    binary = find_nats_server()
    if binary is None:
        if IN_CI:
            pytest.fail("nats-server is not installed (CI=true: a missing tool is a failure)")
        pytest.skip("nats-server is not installed")
    root = tmp_path / "nats"
    root.mkdir()
    with nats_cluster(binary, root) as started:
        yield started


async def _connect(cluster: NatsCluster) -> Any:
    import nats

    servers = [f"nats://127.0.0.1:{node.port}" for node in cluster.nodes]
    return await nats.connect(servers=servers, max_reconnect_attempts=-1, reconnect_time_wait=0.2)


async def _wait_for_jetstream(js: Any) -> None:
    """Until the cluster has elected its meta leader, JetStream requests fail."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await js.account_info()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _write(store_url: str) -> None:
    async with open_store(store_url) as store:
        for start in range(0, RUNS, 50):
            await asyncio.gather(
                *(
                    store.bootstrap_run_tx(
                        RunBootstrapInput(
                            metadata=RunMetadata(run_id=f"run-{i:04d}", workflow="cluster"),
                            first_events=[
                                RunEventInput(type="Step", payload={"n": n})
                                for n in range(EVENTS_PER_RUN)
                            ],
                        )
                    )
                    for i in range(start, start + 50)
                )
            )


async def _stored(js: Any, stream: str) -> int:
    try:
        info = await js.stream_info(stream)
    except Exception:  # the stream is not there yet, or has no leader for a moment
        return -1
    return int(info.state.messages)


async def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_drain_into_a_three_node_cluster_while_a_node_dies(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:10]
    stream, subject = f"RS_CLUSTER_{suffix}", f"rscluster.{suffix}.events"
    store_url = f"sqlite:///{tmp_path / 'cluster.db'}"
    nc = await _connect(cluster)
    js = nc.jetstream(timeout=5)
    relay = None
    try:
        await _wait_for_jetstream(js)
        await _write(store_url)
        sink = f"{cluster.url}?subject={subject}&stream={stream}&replicas=3"
        started = time.monotonic()
        relay = start_relay(
            store_url,
            sink,
            tmp_path / "relay.log",
            *("--workers", "8", "--batch-size", "500", "--lease", "10"),
        )
        await _wait(lambda: _more_than(js, stream, TOTAL // 4), 120, "a quarter stored")
        info = await js.stream_info(stream)
        assert info.config.num_replicas == 3
        # Kill the node the relay is connected to: it must move to a surviving one.
        victim = next(n for n in cluster.nodes if "runstate-relay" in cluster.client_names(n))
        killed_at = await _stored(js, stream)
        cluster.kill(victim)
        await asyncio.sleep(3)
        cluster.start(victim)
        async with open_store(store_url) as store:
            assert isinstance(store, OutboxStore)
            await _wait(lambda: _drained(store), 150, "the relay to drain the outbox")
            stats = await store.outbox_stats()
        elapsed = time.monotonic() - started
        report = relay.report()
        relay = None
        assert (stats.pending, stats.in_flight, stats.dead, stats.delivered) == (0, 0, 0, TOTAL)
        assert report["delivered"] >= TOTAL
        assert 0 < killed_at < TOTAL, "the node died in the middle of the drain"
        # Every retry fell within the duplicate window, so JetStream stored each id once.
        assert elapsed < DUPLICATE_WINDOW
        await _check_stream(js, stream, subject)
        await _wait(lambda: _replicas_current(js, stream), 60, "the restarted node to catch up")
    finally:
        if relay is not None:
            relay.kill()
        await nc.close()


async def _more_than(js: Any, stream: str, count: int) -> bool:
    return await _stored(js, stream) >= count


async def _drained(store: OutboxStore) -> bool:
    stats = await store.outbox_stats()
    return stats.pending == 0 and stats.in_flight == 0


async def _replicas_current(js: Any, stream: str) -> bool:
    info = await js.stream_info(stream)
    replicas = info.cluster.replicas or []
    return len(replicas) == 2 and all(r.current and not r.lag for r in replicas)


async def _check_stream(js: Any, stream: str, subject: str) -> None:
    """Read the whole stream: each id once, each run 1..N in order."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    assert await _stored(js, stream) == TOTAL
    consumer = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, mem_storage=True
        ),
    )
    seen: set[str] = set()
    per_run: dict[str, list[int]] = {}
    while len(seen) < TOTAL:
        for message in await consumer.fetch(5000, timeout=10):
            message_id = (message.headers or {})["Nats-Msg-Id"]
            assert message_id not in seen, f"{message_id} delivered twice"
            seen.add(message_id)
            body = json.loads(message.data)
            assert body["id"] == message_id
            per_run.setdefault(body["subject"], []).append(body["data"]["n"])
    await consumer.unsubscribe()
    assert per_run == {f"run-{i:04d}": list(range(EVENTS_PER_RUN)) for i in range(RUNS)}
