"""Every sink against a real broker or receiver; skipped locally (failed under CI) when down."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import loopback_server, require_service
from runstate import InvalidInput, MemoryStore, RunBootstrapInput, RunEventInput, RunMetadata
from runstate.relay import Relay
from runstate.relay.metrics import RelayMetrics
from runstate.sinks import (
    CallableSink,
    DeliveryOutcome,
    DeliveryStatus,
    Sink,
    create_sink,
    open_sink,
    register_sink,
)
from runstate.sinks.cloudevents import to_cloudevent
from runstate.sinks.webhook import SIGNATURE_HEADER, sign, verify_signature
from runstate.types import OutboxRecord, RunEventPersisted


def record(run_id: str, seq: int, outbox_id: int, *, workflow: str = "wf") -> OutboxRecord:
    event = RunEventPersisted(
        run_id=run_id,
        seq=seq,
        position=outbox_id,
        type="StepStarted",
        payload={"seq": seq, "text": "héllo"},
        event_id=f"ev-{run_id}-{seq}",
        schema_version=1,
        occurred_at=None,
        recorded_at=datetime.now(UTC),
    )
    return OutboxRecord(outbox_id=outbox_id, event=event, workflow=workflow, attempts=0)


def sample_batch() -> list[OutboxRecord]:
    """Two interleaved runs, in the per-run order a claim returns."""
    return [
        record("run-a", 1, 1),
        record("run-a", 2, 2),
        record("run-b", 1, 3),
        record("run-a", 3, 4),
        record("run-b", 2, 5),
    ]


def statuses(outcomes: list[DeliveryOutcome]) -> set[DeliveryStatus]:
    return {outcome.status for outcome in outcomes}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def by_run(envelopes: list[dict[str, Any]]) -> dict[str, list[int]]:
    runs: dict[str, list[int]] = {}
    for envelope in envelopes:
        runs.setdefault(envelope["subject"], []).append(envelope["seq"])
    return runs


async def seeded_store(runs: int, events: int) -> MemoryStore:
    store = MemoryStore()
    for index in range(runs):
        run_id = f"run-{index}"
        first = [RunEventInput(type="E", payload={"n": n}) for n in range(events)]
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf"), first_events=first
            )
        )
    return store


# -- NATS JetStream ------------------------------------------------------------------------


async def stream_messages(stream: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        messages = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            messages.append((json.loads(msg.data or b""), dict(msg.headers or {})))
        return messages
    finally:
        await nc.close()


async def test_nats_creates_stream_dedupes_and_keeps_order(nats_stream: tuple[str, str]) -> None:
    stream, prefix = nats_stream
    batch = sample_batch()
    url = f"nats://127.0.0.1:4222?subject={prefix}.{{workflow}}&stream={stream}"
    async with open_sink(url) as sink:
        assert statuses(await sink.publish(batch)) == {DeliveryStatus.DELIVERED}
        # The same records again, as after a relay crash: JetStream drops them by Nats-Msg-Id.
        assert statuses(await sink.publish(batch)) == {DeliveryStatus.DELIVERED}
    messages = await stream_messages(stream)
    assert len(messages) == len(batch)
    assert [body for body, _ in messages] == [to_cloudevent(r) for r in batch]
    assert [headers["Nats-Msg-Id"] for _, headers in messages] == [r.message_id for r in batch]
    assert by_run([body for body, _ in messages]) == {"run-a": [1, 2, 3], "run-b": [1, 2]}


async def test_nats_relay_delivers_many_events_in_order(nats_stream: tuple[str, str]) -> None:
    stream, prefix = nats_stream
    store = await seeded_store(runs=6, events=25)
    url = f"nats://127.0.0.1:4222?subject={prefix}.events&stream={stream}"
    async with open_sink(url) as sink:
        relay = Relay(store, sink, workers=3, batch_size=16, metrics=RelayMetrics(export=False))
        report = await relay.run_once()
    assert report.delivered == 150
    messages = await stream_messages(stream)
    assert by_run([body for body, _ in messages]) == {
        f"run-{i}": list(range(1, 26)) for i in range(6)
    }


def retried_because(outcomes: list[DeliveryOutcome], reason: str) -> bool:
    """Whether every outcome is a retry whose error says ``reason``."""
    return all(o.status is DeliveryStatus.RETRY and reason in (o.error or "") for o in outcomes)


async def publish_one_too_large(url: str, size: int) -> list[DeliveryOutcome]:
    """Publish run-a's seq 1, a run-b record with a ``size``-character payload, run-a's seq 2."""
    large = record("run-b", 1, 2)
    large = replace(large, event=replace(large.event, payload={"blob": "x" * size}))
    async with open_sink(url) as sink:
        return await sink.publish([record("run-a", 1, 1), large, record("run-a", 2, 3)])


ONE_DEAD_LETTER = [DeliveryStatus.DELIVERED, DeliveryStatus.DEAD, DeliveryStatus.DELIVERED]


async def test_nats_publish_with_no_stream_for_the_subject_is_retried(
    nats_stream: tuple[str, str],
) -> None:
    _, prefix = nats_stream
    async with open_sink(f"nats://127.0.0.1:4222?subject={prefix}.nowhere") as sink:
        outcomes = await sink.publish(sample_batch())
    assert len(outcomes) == 5
    assert retried_because(outcomes, "NoStreamResponseError")


async def test_nats_publish_landing_in_another_stream_than_named_is_retried(
    nats_stream: tuple[str, str],
) -> None:
    stream, prefix = nats_stream
    async with open_sink(f"nats://127.0.0.1:4222?subject={prefix}.x&stream={stream}") as sink:
        assert statuses(await sink.publish(sample_batch()[:1])) == {DeliveryStatus.DELIVERED}
    other = f"nats://127.0.0.1:4222?subject={prefix}.x&stream={stream}_OTHER&create_stream=false"
    async with open_sink(other) as sink:
        outcomes = await sink.publish(sample_batch())
    assert len(outcomes) == 5
    assert retried_because(outcomes, "expected stream does not match")
    assert len(await stream_messages(stream)) == 1


async def test_nats_publish_nobody_acknowledges_is_retried_after_the_timeout(
    nats_stream: tuple[str, str],
) -> None:
    import nats

    _, prefix = nats_stream
    listener = await nats.connect("nats://127.0.0.1:4222")
    try:
        # A plain subscriber is a responder that never answers, as a stalled stream would be.
        await listener.subscribe(f"{prefix}.silent")
        await listener.flush()
        url = f"nats://127.0.0.1:4222?subject={prefix}.silent&timeout=0.3"
        async with open_sink(url) as sink:
            outcomes = await sink.publish(sample_batch())
    finally:
        await listener.close()
    assert len(outcomes) == 5
    assert retried_because(outcomes, "no JetStream acknowledgement within 0.3s")


async def test_nats_record_over_the_server_payload_limit_is_dead_lettered_alone(
    nats_stream: tuple[str, str],
) -> None:
    stream, prefix = nats_stream
    url = f"nats://127.0.0.1:4222?subject={prefix}.x&stream={stream}"
    outcomes = await publish_one_too_large(url, 1_100_000)  # over the server's 1 MiB
    assert [o.status for o in outcomes] == ONE_DEAD_LETTER
    assert "maximum payload exceeded" in (outcomes[1].error or "")
    assert [headers["Nats-Msg-Id"] for _, headers in await stream_messages(stream)] == [
        record("run-a", 1, 1).message_id,
        record("run-a", 2, 3).message_id,
    ]


async def test_nats_record_over_the_stream_message_size_is_dead_lettered_alone(
    nats_stream: tuple[str, str],
) -> None:
    import nats

    stream, prefix = nats_stream
    admin = await nats.connect("nats://127.0.0.1:4222")
    try:
        await admin.jetstream().add_stream(name=stream, subjects=[f"{prefix}.>"], max_msg_size=4096)
    finally:
        await admin.close()
    url = f"nats://127.0.0.1:4222?subject={prefix}.x&stream={stream}&create_stream=false"
    outcomes = await publish_one_too_large(url, 5000)
    assert [o.status for o in outcomes] == ONE_DEAD_LETTER
    assert "message size exceeds maximum allowed" in (outcomes[1].error or "")


@pytest.mark.parametrize(
    ("data", "headers", "expected"),
    [
        (b'{"stream":"S", "seq":1}', None, None),
        (b'{"stream":"S", "seq":2,"duplicate": true}', None, None),
        (b'{"stream":"S", "domain":"d", "seq":3}', None, None),
        (b'{"seq":3, "stream":"S"}', None, None),  # another server's key order
        (b"", {"Status": "503"}, "NoStreamResponseError"),
        (
            b'{"error":{"code":400,"err_code":10060,"description":"expected stream does not'
            b' match"},"stream":"S","seq":0}',
            None,
            "SinkError: JetStream refused the message: expected stream does not match"
            " (status 400, error 10060)",
        ),
        (
            b'{"error":{"code":400,"err_code":10054,"description":"message size exceeds'
            b' maximum allowed"},"stream":"S","seq":0}',
            None,
            "PermanentDeliveryError",
        ),
        (b"not json", None, "SinkError: unexpected JetStream acknowledgement"),
        (b'["stream"]', None, "SinkError: unexpected JetStream acknowledgement"),
    ],
)
def test_nats_acknowledgements_are_read_strictly(
    data: bytes, headers: dict[str, str] | None, expected: str | None
) -> None:
    from nats.aio.msg import Msg

    from runstate.sinks.nats import ack_error

    error = ack_error(Msg(_client=cast(Any, None), subject="x", data=data, headers=headers))
    if expected is None:
        assert error is None
    else:
        assert error is not None
        assert f"{type(error).__name__}: {error}".startswith(expected)


class _NoJitter(random.Random):
    """A backoff without jitter: always the ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def _relay_without_jitter(store: Any, sink: Sink) -> Relay:
    """A relay whose first retry is due in exactly 0.2 s: after its run_once has ended."""
    return Relay(store, sink, backoff_base=0.2, rng=_NoJitter(), metrics=RelayMetrics(export=False))


async def test_nats_down_then_back_loses_nothing(
    nats_stream: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    stream, prefix = nats_stream
    store = await seeded_store(runs=2, events=3)
    caplog.set_level(logging.DEBUG)
    down = f"nats://relay:n4ts-s3cret@127.0.0.1:{closed_port()}?subject={prefix}.x&stream={stream}"
    async with open_sink(down, connect_timeout=0.5) as sink:
        # With jitter, a near-zero delay let run_once claim and fail the heads again.
        report = await _relay_without_jitter(store, sink).run_once()
    assert report.delivered == 0
    assert report.retried == 2  # the head of each run; the rest waits behind it
    assert "n4ts-s3cret" not in caplog.text
    assert "relay:***@" in caplog.text
    await asyncio.sleep(0.25)
    up = f"nats://127.0.0.1:4222?subject={prefix}.x&stream={stream}"
    async with open_sink(up) as sink:
        relay = Relay(store, sink, metrics=RelayMetrics(export=False))
        assert (await relay.run_once()).delivered == 6
    assert by_run([body for body, _ in await stream_messages(stream)]) == {
        "run-0": [1, 2, 3],
        "run-1": [1, 2, 3],
    }


# -- RabbitMQ ------------------------------------------------------------------------------


async def test_rabbitmq_persistent_confirmed_messages(
    rabbitmq_exchange: tuple[str, Any],
) -> None:
    import aio_pika

    exchange_name, queue = rabbitmq_exchange
    url = (
        "amqp://guest:guest@127.0.0.1:5672/%2F"
        f"?exchange={exchange_name}&routing_key=runs.{{workflow}}.{{type}}"
    )
    batch = sample_batch()
    async with open_sink(url) as sink:
        assert statuses(await sink.publish(batch)) == {DeliveryStatus.DELIVERED}
    received = []
    for _ in batch:
        message = await queue.get(timeout=5)
        await message.ack()
        received.append(message)
    assert [m.message_id for m in received] == [r.message_id for r in batch]
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in received)
    assert all(m.content_type == "application/cloudevents+json" for m in received)
    assert {m.routing_key for m in received} == {"runs.wf.StepStarted"}
    assert [json.loads(m.body) for m in received] == [to_cloudevent(r) for r in batch]


async def test_rabbitmq_down_retries_and_masks_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runstate")
    url = f"amqp://relay:r4bbit-s3cret@127.0.0.1:{closed_port()}/?exchange=x"
    async with open_sink(url, timeout=1) as sink:
        outcomes = await sink.publish(sample_batch())
    assert statuses(outcomes) == {DeliveryStatus.RETRY}
    assert all("r4bbit-s3cret" not in (o.error or "") for o in outcomes)
    assert "r4bbit-s3cret" not in caplog.text


# -- Redis Streams -------------------------------------------------------------------------


async def test_redis_stream_entries() -> None:
    require_service("Redis", "127.0.0.1", 6379)
    import redis.asyncio

    key = f"rs-test:{uuid.uuid4().hex[:12]}"
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        batch = sample_batch()
        async with open_sink(f"redis://127.0.0.1:6379/0?stream={key}&maxlen=1000") as sink:
            assert statuses(await sink.publish(batch)) == {DeliveryStatus.DELIVERED}
        entries: Any = await client.xrange(key)
        assert [fields[b"id"].decode() for _, fields in entries] == [r.message_id for r in batch]
        bodies = [json.loads(fields[b"data"]) for _, fields in entries]
        assert bodies == [to_cloudevent(r) for r in batch]
    finally:
        await client.delete(key)
        await client.aclose()


async def test_redis_down_retries() -> None:
    url = f"redis://:r3dis-s3cret@127.0.0.1:{closed_port()}/0?stream=x"
    async with open_sink(url, timeout=1) as sink:
        outcomes = await sink.publish(sample_batch())
    assert statuses(outcomes) == {DeliveryStatus.RETRY}
    assert all("r3dis-s3cret" not in (o.error or "") for o in outcomes)


# -- webhook -------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server answering with scripted statuses (then 200)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((headers, body))
            status = self.statuses.pop(0) if self.statuses else 200
            extra = "Retry-After: 7\r\n" if status == 429 else ""
            head = f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n{extra}Connection: close\r\n"
            writer.write(head.encode() + b"\r\n")
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    async with loopback_server(state.handle) as port:
        state.port = port
        yield state


async def test_webhook_structured_and_signed_the_earlier_way(receiver: Receiver) -> None:
    batch = sample_batch()
    url = f"http://127.0.0.1:{receiver.port}/hook?tenant=t1#signature=x-runstate-signature"
    async with open_sink(url, secret="shh") as sink:
        assert statuses(await sink.publish(batch)) == {DeliveryStatus.DELIVERED}
    assert len(receiver.requests) == len(batch)
    got = [json.loads(body) for _, body in receiver.requests]
    assert by_run(got) == {"run-a": [1, 2, 3], "run-b": [1, 2]}
    for headers, body in receiver.requests:
        envelope = json.loads(body)
        assert headers["content-type"] == "application/cloudevents+json"
        assert headers["idempotency-key"] == envelope["id"]
        assert not [name for name in headers if name.startswith(("ce-", "webhook-"))]
        assert verify_signature("shh", body, headers[SIGNATURE_HEADER.lower()])
        assert not verify_signature("other", body, headers[SIGNATURE_HEADER.lower()])
        assert not verify_signature("shh", body + b" ", headers[SIGNATURE_HEADER.lower()])


def test_signature_timestamps_resist_replay() -> None:
    header = sign("k", b"{}", timestamp=1_000_000)
    assert verify_signature("k", b"{}", header, now=1_000_100)
    assert not verify_signature("k", b"{}", header, now=1_000_000 + 301)
    assert not verify_signature("k", b"{}", None)
    assert not verify_signature("k", b"{}", "t=x,sha256=00")


async def test_webhook_binary_mode(receiver: Receiver) -> None:
    target = record("run é", 4, 9)
    async with open_sink(f"http://127.0.0.1:{receiver.port}/h#mode=binary") as sink:
        assert statuses(await sink.publish([target])) == {DeliveryStatus.DELIVERED}
    headers, body = receiver.requests[0]
    assert json.loads(body) == {"seq": 4, "text": "héllo"}
    assert headers["content-type"] == "application/json"
    assert headers["ce-id"] == "run%20%C3%A9:4"
    assert headers["ce-seq"] == "4"
    assert headers["ce-specversion"] == "1.0"
    assert SIGNATURE_HEADER.lower() not in headers


async def test_webhook_retry_then_delivered_and_4xx_dead(receiver: Receiver) -> None:
    store = await seeded_store(runs=1, events=2)
    receiver.statuses = [500]
    async with open_sink(f"http://127.0.0.1:{receiver.port}/") as sink:
        relay = _relay_without_jitter(store, sink)
        first = await relay.run_once()
        assert (first.retried, first.delivered) == (1, 0)
        await asyncio.sleep(0.25)
        second = await relay.run_once()
        assert second.delivered == 2
        ids = [headers["idempotency-key"] for headers, _ in receiver.requests]
        assert ids == ["run-0:1", "run-0:1", "run-0:2"]

        receiver.statuses = [400, 429]
        outcomes = await sink.publish([record("x", 1, 1), record("y", 1, 2)])
    assert [o.status for o in outcomes] == [DeliveryStatus.DEAD, DeliveryStatus.RETRY]
    assert outcomes[1].retry_after == 7


async def test_webhook_network_error_retries_and_masks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://hook:w3b-s3cret@127.0.0.1:{closed_port()}/p?token=t0ken-value"
    async with open_sink(url, timeout=1) as sink:
        outcomes = await sink.publish(sample_batch())
    assert [o.status for o in outcomes].count(DeliveryStatus.RETRY) == 2
    assert [o.status for o in outcomes].count(DeliveryStatus.SKIPPED) == 3
    assert sink.name == "http://hook:***@127.0.0.1:" + url.split(":")[3].split("/")[0] + "/p"
    for text in [caplog.text, *(o.error or "" for o in outcomes)]:
        assert "w3b-s3cret" not in text
        assert "t0ken-value" not in text


def test_webhook_secret_never_in_url() -> None:
    with pytest.raises(InvalidInput, match="secret"):
        create_sink("https://example.com/h#secret=abc")


# -- files, stdout, callables, registry ------------------------------------------------------


async def test_file_sink_appends_fsynced_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr("runstate.sinks.files.os.fsync", counting_fsync)
    path = tmp_path / "sub" / "events.jsonl"
    batch = sample_batch()
    async with open_sink(f"file://{path}") as sink:
        await sink.publish(batch[:2])
        await sink.publish(batch[2:])
    async with open_sink(f"file://{path}") as sink:
        await sink.publish(batch[:1])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [to_cloudevent(r) for r in [*batch, batch[0]]]
    assert len(synced) == 3


async def test_file_sink_unwritable_path_retries(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    async with open_sink(f"file://{blocker}/events.jsonl") as sink:
        outcomes = await sink.publish(sample_batch())
    assert statuses(outcomes) == {DeliveryStatus.RETRY}


async def test_stdout_sink(capsys: pytest.CaptureFixture[str]) -> None:
    batch = sample_batch()
    async with open_sink("stdout://") as sink:
        assert statuses(await sink.publish(batch)) == {DeliveryStatus.DELIVERED}
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [to_cloudevent(r) for r in batch]


async def test_callable_sink_skips_after_a_failure() -> None:
    seen: list[str] = []

    async def handler(event: dict[str, Any]) -> None:
        if event["id"] == "run-a:2":
            raise ValueError("nope")
        seen.append(event["id"])

    outcomes = await CallableSink(handler).publish(sample_batch())
    assert [o.status for o in outcomes] == [
        DeliveryStatus.DELIVERED,
        DeliveryStatus.RETRY,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.SKIPPED,
        DeliveryStatus.DELIVERED,
    ]
    assert seen == ["run-a:1", "run-b:1", "run-b:2"]


def test_registry_custom_scheme_and_errors() -> None:
    made: list[str] = []

    def factory(url: str, options: Any) -> Sink:
        made.append(url)

        async def handler(event: dict[str, Any]) -> None:
            return None

        return CallableSink(handler, name="custom")

    register_sink("custom", factory)
    assert create_sink("custom://x").name == "custom"
    assert made == ["custom://x"]
    with pytest.raises(InvalidInput, match=r"\*\*\*") as info:
        create_sink("bogus://user:p4ss@host/")
    assert "p4ss" not in str(info.value)
    with pytest.raises(InvalidInput, match="unknown sink option"):
        create_sink("nats://127.0.0.1:4222?subjcet=typo")


def test_nats_url_with_several_servers_is_split_and_checked() -> None:
    from runstate.sinks.nats import NatsSink, parse_servers

    assert parse_servers("nats://u:pw@127.0.0.1:4222, 127.0.0.1:4223,[::1]:4224,h") == [
        "nats://u:pw@127.0.0.1:4222",
        "nats://u:pw@127.0.0.1:4223",
        "nats://u:pw@[::1]:4224",
        "nats://u:pw@h:4222",
    ]
    sink = create_sink("nats://127.0.0.1:4222,127.0.0.1:4223?subject=S&stream=N&replicas=3")
    assert isinstance(sink, NatsSink)
    assert sink.replicas == 3
    bad = {
        "nats://u:s3cr3t@127.0.0.1:4222,127.0.0.1:99999": "server 2 .* invalid port",
        "nats://127.0.0.1:4222,,127.0.0.1:4223": "server 2 .* no valid host",
        "nats://127.0.0.1:x": "server 1 .* invalid port",
        "nats://:4222": "server 1 .* no valid host",
        "nats://127.0.0.1:0": "invalid port",
    }
    for url, message in bad.items():
        with pytest.raises(InvalidInput, match=message) as info:
            create_sink(url)
        assert info.value.field == "sink_url"
        assert "s3cr3t" not in str(info.value)
    for replicas in ("0", "6", "two"):
        with pytest.raises(InvalidInput) as info:
            create_sink(f"nats://127.0.0.1:4222?stream=N&replicas={replicas}")
        assert info.value.field == "replicas"
