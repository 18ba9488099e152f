"""The relay on every store adapter: order, retries, dead letters, crashes, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import StoreFactory
from runstate import (
    InvalidInput,
    MemoryStore,
    OutboxStore,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    RunStateStore,
    open_store,
)
from runstate.relay import Relay, run_relay
from runstate.relay.metrics import RelayMetrics
from runstate.sinks import CallableSink, DeliveryOutcome, PermanentDeliveryError
from runstate.sinks.base import BaseSink

FailRule = Callable[[dict[str, Any]], BaseException | None]


class Recorder:
    """An in-process consumer that records what it gets and fails on request."""

    def __init__(self, fail: FailRule | None = None, delay: float = 0.0) -> None:
        self.received: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = defaultdict(int)
        self.fail = fail
        self.delay = delay

    async def __call__(self, event: dict[str, Any]) -> None:
        self.attempts[event["id"]] += 1
        if self.delay:
            await asyncio.sleep(random.uniform(0, self.delay))
        error = self.fail(event) if self.fail else None
        if error is not None:
            raise error
        self.received.append(event)

    def seqs_by_run(self) -> dict[str, list[int]]:
        runs: dict[str, list[int]] = defaultdict(list)
        for event in self.received:
            runs[event["subject"]].append(event["seq"])
        return dict(runs)


def outbox(store: RunStateStore) -> OutboxStore:
    assert isinstance(store, OutboxStore)
    return store


async def seed(store: RunStateStore, runs: int, events: int, prefix: str = "run") -> list[str]:
    """Create ``runs`` runs of ``events`` events each, interleaving appends across runs."""
    run_ids = [f"{prefix}-{index}" for index in range(runs)]
    for run_id in run_ids:
        metadata = RunMetadata(run_id=run_id, workflow="wf")
        first = [RunEventInput(type="RunQueued", payload={"n": 1})]
        await store.bootstrap_run_tx(RunBootstrapInput(metadata=metadata, first_events=first))
    for n in range(2, events + 1):
        for run_id in run_ids:
            await store.append_and_enqueue_tx(
                run_id, [RunEventInput(type="Step", payload={"n": n})]
            )
    return run_ids


def quiet_metrics() -> RelayMetrics:
    return RelayMetrics(export=False)


def relay(store: RunStateStore, sink: Any, **options: Any) -> Relay:
    options.setdefault("metrics", quiet_metrics())
    return Relay(outbox(store), sink, **options)


async def test_every_event_delivered_once_in_per_run_order(store_factory: StoreFactory) -> None:
    store = await store_factory()
    run_ids = await seed(store, runs=12, events=9)
    recorder = Recorder()
    report = await relay(store, CallableSink(recorder), batch_size=7).run_once()
    assert report.delivered == 12 * 9
    assert report.retried == report.dead == 0
    assert recorder.seqs_by_run() == {run_id: list(range(1, 10)) for run_id in run_ids}
    assert len({event["id"] for event in recorder.received}) == 12 * 9
    stats = await outbox(store).outbox_stats()
    assert (stats.pending, stats.in_flight, stats.dead) == (0, 0, 0)
    assert (await relay(store, CallableSink(recorder)).run_once()).delivered == 0


async def test_message_ids_and_envelopes(store_factory: StoreFactory) -> None:
    store = await store_factory()
    await seed(store, runs=1, events=2, prefix="env")
    recorder = Recorder()
    await relay(store, CallableSink(recorder)).run_once()
    events = await store.list_events("env-0")
    assert [e["id"] for e in recorder.received] == ["env-0:1", "env-0:2"]
    assert [e["eventid"] for e in recorder.received] == [e.event_id for e in events]
    # The source names the store: its id, made with the store, distinct from any other's.
    source = f"runstate://{await outbox(store).store_id()}"
    assert all(e["workflow"] == "wf" and e["source"] == source for e in recorder.received)


async def test_concurrent_workers_and_relays_keep_per_run_order(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory()
    run_ids = await seed(store, runs=10, events=12)
    recorder = Recorder(delay=0.002)
    sink = CallableSink(recorder, concurrency=4)
    relays = [
        relay(await store_factory(), sink, workers=3, batch_size=4),
        relay(await store_factory(), sink, workers=2, batch_size=5),
    ]
    reports = await asyncio.gather(*(r.run_once() for r in relays))
    assert sum(r.delivered for r in reports) == 120
    assert recorder.seqs_by_run() == {run_id: list(range(1, 13)) for run_id in run_ids}


async def test_failing_record_blocks_only_its_run_then_dead_letter_and_redrive(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory()
    await seed(store, runs=4, events=5)
    broken = {"run-2:3"}

    def fail(event: dict[str, Any]) -> BaseException | None:
        return ConnectionError("receiver down") if event["id"] in broken else None

    recorder = Recorder(fail)
    r = relay(store, CallableSink(recorder), batch_size=3, max_attempts=3)
    r.backoff_base, r.backoff_max = 0.01, 0.02
    totals: dict[str, int] = defaultdict(int)
    for _ in range(50):
        report = await r.run_once()
        totals["retried"] += report.retried
        totals["dead"] += report.dead
        if (await outbox(store).outbox_stats()).dead:
            break
        await asyncio.sleep(0.025)
    assert totals == {"retried": 2, "dead": 1}
    assert recorder.attempts["run-2:3"] == 3
    seqs = recorder.seqs_by_run()
    assert seqs["run-2"] == [1, 2]
    assert all(seqs[f"run-{i}"] == [1, 2, 3, 4, 5] for i in (0, 1, 3))
    stats = await outbox(store).outbox_stats()
    assert stats.dead == 1
    assert stats.pending == 2  # run-2:4 and run-2:5 wait behind the dead letter

    broken.clear()
    assert await outbox(store).redrive_dead_letters(run_id="run-2") == 1
    report = await r.run_once()
    assert report.delivered == 3
    assert recorder.seqs_by_run()["run-2"] == [1, 2, 3, 4, 5]


async def test_permanent_error_dead_letters_at_once(store_factory: StoreFactory) -> None:
    store = await store_factory()
    await seed(store, runs=2, events=2)

    def fail(event: dict[str, Any]) -> BaseException | None:
        return PermanentDeliveryError("HTTP 400") if event["id"] == "run-0:1" else None

    recorder = Recorder(fail)
    report = await relay(store, CallableSink(recorder)).run_once()
    assert (report.dead, report.retried, report.delivered) == (1, 0, 2)
    assert recorder.attempts["run-0:1"] == 1
    assert "run-0" not in recorder.seqs_by_run()


class _OutOfOrderSink(BaseSink):
    """Claims to deliver a run's second record although its first failed."""

    name = "test://out-of-order"

    def __init__(self) -> None:
        self.calls = 0

    async def publish(self, batch: Any) -> list[DeliveryOutcome]:
        self.calls += 1
        if self.calls > 1:
            return [DeliveryOutcome.delivered(record) for record in batch]
        return [
            DeliveryOutcome.retry(record, "flaky")
            if record.event.seq == 1
            # The relay must not trust this: seq 2 is released and re-sent after seq 1.
            else DeliveryOutcome.delivered(record)
            for record in batch
        ]


async def test_records_after_a_failure_are_released_not_marked(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory()
    await seed(store, runs=1, events=2)
    r = relay(store, _OutOfOrderSink(), backoff_base=0.001, backoff_max=0.001)
    first = await r.run_once()
    assert (first.retried, first.released, first.delivered) >= (1, 1, 0)
    await asyncio.sleep(0.01)
    await r.run_once()
    stats = await outbox(store).outbox_stats()
    assert stats.delivered == 2
    assert stats.pending == 0


class _ExplodingSink(BaseSink):
    name = "test://boom"

    async def publish(self, batch: Any) -> list[DeliveryOutcome]:
        raise RuntimeError("sink bug")


async def test_a_sink_that_raises_retries_the_batch(store_factory: StoreFactory) -> None:
    store = await store_factory()
    await seed(store, runs=3, events=1)
    report = await relay(store, _ExplodingSink(), backoff_base=60).run_once()
    assert report.retried == 3
    stats = await outbox(store).outbox_stats()
    assert stats.pending == 3
    assert stats.in_flight == 0


async def test_crashed_relay_records_are_redelivered_after_lease_expiry(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory()
    await seed(store, runs=3, events=3)
    crashed = await outbox(await store_factory()).claim_outbox_batch(
        owner="crashed-relay", limit=5, lease_seconds=0.3
    )
    assert len(crashed) == 5
    recorder = Recorder()
    early = await relay(store, CallableSink(recorder)).run_once()
    # run-0:1..3 and run-1:1..2 are leased; run-1:3 waits behind them; run-2 goes on.
    assert early.delivered == 3
    await asyncio.sleep(0.35)
    late = await relay(store, CallableSink(recorder)).run_once()
    assert late.delivered == 6
    assert {e["id"] for e in recorder.received} >= {r.message_id for r in crashed}
    for seqs in recorder.seqs_by_run().values():
        assert seqs == [1, 2, 3]


async def test_graceful_stop_finishes_the_batch_and_releases(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory()
    await seed(store, runs=5, events=4)
    entered = asyncio.Event()
    proceed = asyncio.Event()
    recorder = Recorder()

    async def slow(event: dict[str, Any]) -> None:
        entered.set()
        await proceed.wait()
        await recorder(event)

    r = relay(store, CallableSink(slow), batch_size=6, poll_interval=10)
    task = asyncio.create_task(r.run_forever())
    await asyncio.wait_for(entered.wait(), 5)
    r.stop()
    proceed.set()
    report = await asyncio.wait_for(task, 5)
    assert report.delivered == 6
    assert len(recorder.received) == 6
    stats = await outbox(store).outbox_stats()
    assert (stats.in_flight, stats.pending, stats.delivered) == (0, 14, 6)


async def test_under_a_backlog_the_next_batch_is_claimed_during_the_delivery(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory()
    run_ids = await seed(store, runs=6, events=5)
    recorder = Recorder()
    leased_during_delivery: list[int] = []

    async def watch(event: dict[str, Any]) -> None:
        if not recorder.received:
            for _ in range(500):  # the claim ahead runs meanwhile
                in_flight = (await outbox(store).outbox_stats()).in_flight
                if in_flight > 10:
                    break
                await asyncio.sleep(0.01)
            leased_during_delivery.append(in_flight)
        await recorder(event)

    report = await relay(store, CallableSink(watch), batch_size=10).run_once()
    assert report.delivered == 30
    # This batch of 10 and the next 10, claimed ahead from runs this one does not hold.
    assert leased_during_delivery == [20]
    assert recorder.seqs_by_run() == {run_id: list(range(1, 6)) for run_id in run_ids}
    assert len({event["id"] for event in recorder.received}) == 30


async def test_a_batch_claimed_ahead_that_waited_half_its_lease_is_claimed_anew(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory()
    run_ids = await seed(store, runs=4, events=3)
    recorder = Recorder()

    async def slow_first(event: dict[str, Any]) -> None:
        if not recorder.received:
            await asyncio.sleep(0.6)  # more than half of the 1 s lease
        await recorder(event)

    given_back: list[int] = []
    release = outbox(store).release_outbox

    async def recording_release(outbox_ids: Sequence[int], *, owner: str) -> None:
        given_back.extend(outbox_ids)
        await release(outbox_ids, owner=owner)

    store.release_outbox = recording_release  # type: ignore[attr-defined]
    sink = CallableSink(slow_first)
    report = await relay(store, sink, batch_size=6, lease_seconds=1.0).run_once()
    assert report.delivered == 12
    assert len(given_back) == 6  # the second batch, claimed ahead, then claimed again
    assert recorder.seqs_by_run() == {run_id: [1, 2, 3] for run_id in run_ids}
    assert sorted(recorder.attempts.values()) == [1] * 12  # nothing sent twice
    stats = await outbox(store).outbox_stats()
    assert (stats.pending, stats.in_flight, stats.delivered) == (0, 0, 12)


async def test_run_forever_wakes_on_new_events(store_factory: StoreFactory) -> None:
    store = await store_factory()
    recorder = Recorder()
    r = relay(store, CallableSink(recorder), poll_interval=30, workers=2)
    task = asyncio.create_task(r.run_forever())
    try:
        await asyncio.sleep(0.05)
        await seed(store, runs=2, events=3)
        for _ in range(200):
            if len(recorder.received) == 6:
                break
            await asyncio.sleep(0.01)
        assert len(recorder.received) == 6
    finally:
        r.stop()
        await asyncio.wait_for(task, 5)


async def test_backoff_is_exponential_with_full_jitter() -> None:
    r = Relay(
        MemoryStore(),
        CallableSink(Recorder()),
        backoff_base=1.0,
        backoff_max=10.0,
        metrics=quiet_metrics(),
        rng=random.Random(7),
    )
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (60, 10.0)]:
        delays = [r.backoff_delay(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8
    assert r.backoff_delay(1, retry_after=5.0) >= 5.0
    assert r.backoff_delay(1, retry_after=500.0) <= 10.0


async def test_metrics_are_counted(store_factory: StoreFactory) -> None:
    store = await store_factory()
    await seed(store, runs=2, events=2)
    metrics = RelayMetrics(export=False)

    def fail(event: dict[str, Any]) -> BaseException | None:
        return PermanentDeliveryError("no") if event["id"] == "run-1:1" else None

    await Relay(outbox(store), CallableSink(Recorder(fail)), metrics=metrics).run_once()
    snap = metrics.snapshot()
    assert snap.delivered == {"callable": 2}
    assert snap.dead_letters == {"callable": 1}
    assert snap.publishes >= 1
    assert (snap.pending, snap.dead) == (1, 1)


async def test_metrics_export_to_prometheus() -> None:
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()
    metrics = RelayMetrics(registry=registry)
    metrics.record_delivered("nats", 3)
    metrics.observe_publish("nats", 0.004)
    metrics.set_backlog(pending=5, in_flight=1, dead=0, oldest_age_seconds=2.5)
    assert registry.get_sample_value("runstate_relay_delivered_total", {"sink": "nats"}) == 3
    assert registry.get_sample_value("runstate_relay_publish_seconds_count", {"sink": "nats"}) == 1
    assert registry.get_sample_value("runstate_outbox_oldest_pending_age_seconds") == 2.5


async def test_failures_are_logged_with_masked_secrets(
    store_factory: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = await store_factory()
    await seed(store, runs=1, events=1)

    def fail(event: dict[str, Any]) -> BaseException | None:
        return ConnectionError("cannot reach amqp://relay:hunter2@broker:5672/")

    caplog.set_level(logging.INFO, logger="runstate")
    await relay(store, CallableSink(Recorder(fail)), backoff_base=60).run_once()
    assert "hunter2" not in caplog.text
    assert "amqp://relay:***@broker" in caplog.text


async def test_run_relay_once_to_a_file(tmp_path: Path) -> None:
    name = f"relay-{uuid.uuid4().hex}"
    async with open_store(f"memory://{name}") as store:
        await seed(store, runs=2, events=3)
        path = tmp_path / "out.jsonl"
        report = await run_relay(f"memory://{name}", f"file://{path}", once=True, batch_size=4)
        assert report.delivered == 6
        assert len(path.read_text().splitlines()) == 6


async def test_run_relay_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    name = f"relay-{uuid.uuid4().hex}"
    async with open_store(f"memory://{name}") as store:
        await seed(store, runs=2, events=2)
        path = tmp_path / "out.jsonl"
        task = asyncio.create_task(
            run_relay(f"memory://{name}", f"file://{path}", poll_interval=0.05)
        )
        for _ in range(200):
            if path.exists() and len(path.read_text().splitlines()) == 4:
                break
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)
        report = await asyncio.wait_for(task, 5)
        assert report.delivered == 4
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_relay_rejects_bad_settings() -> None:
    with pytest.raises(InvalidInput):
        Relay(MemoryStore(), CallableSink(Recorder()), workers=0)
    with pytest.raises(InvalidInput):
        Relay(MemoryStore(), CallableSink(Recorder()), batch_size=0)


async def test_retention_purges_old_deliveries_in_batches(store_factory: StoreFactory) -> None:
    store = await store_factory()
    await seed(store, runs=5, events=5)
    keeper = relay(store, CallableSink(Recorder()), retention=timedelta(hours=1))
    assert (await keeper.run_once()).delivered == 25
    assert await keeper.purge_once() == 0
    assert (await outbox(store).outbox_stats()).delivered == 25
    purger = relay(store, CallableSink(Recorder()), retention=timedelta(seconds=0), purge_batch=4)
    await asyncio.sleep(0.01)
    assert await purger.purge_once() == 25
    assert (await outbox(store).outbox_stats()).delivered == 0


async def test_run_forever_purges_on_its_interval(store_factory: StoreFactory) -> None:
    store = await store_factory()
    await seed(store, runs=2, events=2)
    r = relay(
        store,
        CallableSink(Recorder()),
        retention=timedelta(seconds=0),
        purge_interval=0.05,
        poll_interval=0.05,
    )
    task = asyncio.create_task(r.run_forever())
    try:
        for _ in range(200):
            stats = await outbox(store).outbox_stats()
            # Claimed records are neither pending nor delivered yet: wait for them too.
            if (stats.pending, stats.in_flight, stats.delivered) == (0, 0, 0):
                break
            await asyncio.sleep(0.02)
        assert (stats.pending, stats.in_flight, stats.delivered) == (0, 0, 0)
    finally:
        r.stop()
        await asyncio.wait_for(task, 5)
