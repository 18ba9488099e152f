"""What every sink sends, read by clients nobody here wrote, through their documented entry points.

The official CloudEvents SDK (2.x: ``cloudevents.core``) parses every message of every sink,
structured and binary; the ``standardwebhooks`` library verifies the webhook signatures (several
secrets, rotation); Prometheus's ``promtool check metrics`` passes on a scrape of the relay's
metrics, whose backlog gauges are current at scrape time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import rabbitmq as ce_rabbitmq
from cloudevents.core.formats.json import JSONFormat
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from conftest import (
    IN_CI,
    POSTGRES_URL,
    drop_postgres_schema,
    loopback_server,
    require_service,
    unique_schema,
)
from runstate import (
    InvalidInput,
    MemoryStore,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    open_store,
)
from runstate.relay import Relay
from runstate.relay.metrics import RelayMetrics
from runstate.sinks import CallableSink, open_sink
from runstate.store import OutboxStore

RUNSTATE = [sys.executable, "-m", "runstate.cli"]


async def seeded(runs: int = 2, events: int = 3, store: Any = None, prefix: str = "eco") -> Any:
    """A store with ``runs`` runs of ``events`` events each, payloads with non-ASCII text."""
    store = store or MemoryStore()
    for index in range(runs):
        first = [
            RunEventInput(type="StepStarted", payload={"n": n, "text": "héllo ✓"})
            for n in range(events)
        ]
        metadata = RunMetadata(run_id=f"{prefix}-{index}", workflow="wf")
        await store.bootstrap_run_tx(RunBootstrapInput(metadata=metadata, first_events=first))
    return store


async def expected(store: Any) -> list[tuple[str, str, str, dict[str, Any], int]]:
    """(id, type, subject, data, seq) of every event, in per-run order."""
    rows = []
    for index in range(2):
        for event in await store.list_events(f"eco-{index}"):
            rows.append(
                (f"{event.run_id}:{event.seq}", event.type, event.run_id, event.payload, event.seq)
            )
    return rows


def described(events: Sequence[BaseCloudEvent]) -> list[tuple[Any, ...]]:
    """The same tuple for what the SDK parsed, sorted into per-run order."""
    rows = [
        (e.get_id(), e.get_type(), e.get_subject(), e.get_data(), int(e.get_extension("seq")))
        for e in events
    ]
    return sorted(rows, key=lambda row: (row[2], row[4]))


async def relay_all(store: Any, url: str, **options: Any) -> None:
    async with open_sink(url, **options) as sink:
        report = await Relay(store, sink, metrics=RelayMetrics(export=False)).run_once()
    assert (report.retried, report.dead) == (0, 0)


def assert_same_events(
    events: Sequence[BaseCloudEvent], store_source: str, rows: list[Any]
) -> None:
    assert described(events) == sorted(rows, key=lambda row: (row[2], row[4]))
    assert {e.get_specversion() for e in events} == {"1.0"}
    assert {e.get_source() for e in events} == {store_source}
    assert all(e.get_time() is not None for e in events)
    assert {e.get_extension("workflow") for e in events} == {"wf"}


# -- every sink, parsed by the CloudEvents SDK ----------------------------------------------------


async def test_nats_messages_parse_with_the_sdk(nats_stream: tuple[str, str]) -> None:
    import nats

    stream, prefix = nats_stream
    store = await seeded()
    await relay_all(store, f"nats://127.0.0.1:4222?subject={prefix}.{{workflow}}&stream={stream}")
    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        messages = [
            await js.get_msg(stream, seq)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
    finally:
        await nc.close()
    # NATS has no CloudEvents binding in the SDK: the body is the structured JSON format.
    events = [JSONFormat().read(None, m.data or b"") for m in messages]
    assert [m.headers["Nats-Msg-Id"] for m in messages if m.headers] == [e.get_id() for e in events]
    assert_same_events(events, f"runstate://{await store.store_id()}", await expected(store))


async def test_rabbitmq_messages_parse_with_the_sdk(rabbitmq_exchange: tuple[str, Any]) -> None:
    exchange, queue = rabbitmq_exchange
    store = await seeded()
    await relay_all(store, f"amqp://guest:guest@127.0.0.1:5672/%2F?exchange={exchange}")
    events = []
    for _ in range(6):
        message = await queue.get(timeout=5)
        await message.ack()
        headers = {str(k): str(v) for k, v in (message.headers or {}).items()}
        parsed = ce_rabbitmq.from_rabbitmq_event(
            ce_rabbitmq.RabbitMQMessage(
                headers=headers, content_type=message.content_type, body=message.body
            )
        )
        assert message.message_id == parsed.get_id()
        events.append(parsed)
    assert_same_events(events, f"runstate://{await store.store_id()}", await expected(store))


async def test_redis_entries_parse_with_the_sdk() -> None:
    require_service("Redis", "127.0.0.1", 6379)
    import redis.asyncio

    key = f"rs-test:{uuid.uuid4().hex[:12]}"
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
    store = await seeded()
    try:
        await relay_all(store, f"redis://127.0.0.1:6379/0?stream={key}")
        entries: Any = await client.xrange(key)
    finally:
        await client.delete(key)
        await client.aclose()
    events = [JSONFormat().read(None, fields[b"data"]) for _, fields in entries]
    assert [fields[b"id"].decode() for _, fields in entries] == [e.get_id() for e in events]
    assert_same_events(events, f"runstate://{await store.store_id()}", await expected(store))


async def test_json_lines_file_parses_with_the_sdk(tmp_path: Path) -> None:
    store = await seeded()
    path = tmp_path / "events.jsonl"
    await relay_all(store, path.as_uri())
    events = [JSONFormat().read(None, line) for line in path.read_bytes().splitlines()]
    assert_same_events(events, f"runstate://{await store.store_id()}", await expected(store))


class Receiver:
    """An HTTP/1.1 server recording each request's headers and body; answers 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((headers, body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
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


def whsec() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@pytest.mark.parametrize("mode", ["structured", "binary"])
async def test_webhooks_parse_with_the_sdk_and_verify_with_standardwebhooks(
    receiver: Receiver, mode: str
) -> None:
    store = await seeded()
    secret = whsec()
    await relay_all(store, f"http://127.0.0.1:{receiver.port}/hook#mode={mode}", secret=secret)
    assert len(receiver.requests) == 6
    events = []
    for headers, body in receiver.requests:
        ce_headers = [name for name in headers if name.startswith("ce-")]
        if mode == "structured":
            # SDK 2.x reads any ce-* header as binary mode: structured requests carry none.
            assert ce_headers == []
            assert headers["content-type"] == "application/cloudevents+json"
        else:
            assert {"ce-id", "ce-source", "ce-type", "ce-specversion"} <= set(ce_headers)
        event = ce_http.from_http_event(ce_http.HTTPMessage(headers=headers, body=body))
        # The library's documented use: the whsec_ secret as given, headers as received.
        Webhook(secret).verify(body, headers)
        assert headers["webhook-id"] == headers["idempotency-key"] == event.get_id()
        events.append(event)
    assert_same_events(events, f"runstate://{await store.store_id()}", await expected(store))


async def test_webhook_signatures_rotate_over_several_secrets(receiver: Receiver) -> None:
    old, new, raw = whsec(), whsec(), "a-raw-secret-of-the-past"
    store = await seeded(runs=1, events=1)
    url = f"http://127.0.0.1:{receiver.port}/hook"
    # During a rotation the sender signs with both: a consumer holding either accepts.
    await relay_all(store, url, secret=f"{old} {new}")
    store_raw = await seeded(runs=1, events=1)
    await relay_all(store_raw, url, secret=[raw, new])
    (headers, body), (raw_headers, raw_body) = receiver.requests
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert all(s.startswith("v1,") for s in headers["webhook-signature"].split(" "))
    for secret in (old, new):
        Webhook(secret).verify(body, headers)
    Webhook(raw.encode()).verify(raw_body, raw_headers)
    Webhook(new).verify(raw_body, raw_headers)
    for wrong in (whsec(), raw.encode()):
        with pytest.raises(WebhookVerificationError):
            Webhook(wrong).verify(body, headers)
    tampered = body.replace(b"StepStarted", b"StepStartex")
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(tampered, headers)
    # No secret travels: not in a header, not in the body.
    for secret in (old, new, raw):
        assert secret.encode() not in body + json.dumps(headers).encode()


async def test_the_earlier_signature_scheme_stays_available(receiver: Receiver) -> None:
    from runstate.sinks.webhook import SIGNATURE_HEADER, verify_signature

    store = await seeded(runs=1, events=1)
    url = f"http://127.0.0.1:{receiver.port}/hook#signature=x-runstate-signature"
    await relay_all(store, url, secret="one two")
    ((headers, body),) = receiver.requests
    assert not [name for name in headers if name.startswith("webhook-")]
    for secret in ("one", "two"):
        assert verify_signature(secret, body, headers[SIGNATURE_HEADER.lower()])
    assert not verify_signature("three", body, headers[SIGNATURE_HEADER.lower()])


def test_bad_secrets_and_schemes_are_refused_without_echoing_them() -> None:
    from runstate.sinks import create_sink

    with pytest.raises(InvalidInput, match="whsec_") as caught:
        create_sink("http://127.0.0.1:1/h", secret="whsec_not*base64!sekrit")
    assert "sekrit" not in str(caught.value)
    with pytest.raises(InvalidInput, match="standard-webhooks"):
        create_sink("http://127.0.0.1:1/h#signature=hmac")


# -- the CloudEvents source: per store, configurable ----------------------------------------


async def test_every_store_has_its_own_stable_id(tmp_path: Path) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    ids = []
    for name in ("a.db", "b.db"):
        url = f"sqlite:///{tmp_path / name}"
        async with open_store(url) as first, open_store(url) as again:
            assert isinstance(first, OutboxStore)
            assert isinstance(again, OutboxStore)
            ids.append(await first.store_id())
            assert await again.store_id() == ids[-1]
        async with open_store(url) as reopened:
            assert isinstance(reopened, OutboxStore)
            assert await reopened.store_id() == ids[-1]
    schemas = [unique_schema(), unique_schema()]
    try:
        for schema in schemas:
            async with open_store(f"{POSTGRES_URL}?schema={schema}") as store:
                assert isinstance(store, OutboxStore)
                ids.append(await store.store_id())
            async with open_store(f"{POSTGRES_URL}?schema={schema}") as store:
                assert isinstance(store, OutboxStore)
                assert await store.store_id() == ids[-1]
    finally:
        for schema in schemas:
            await drop_postgres_schema(schema)
    ids += [await MemoryStore().store_id(), await MemoryStore().store_id()]
    assert len(set(ids)) == len(ids) == 6
    assert all(uuid.UUID(value).version == 4 for value in ids)


async def test_the_source_is_configurable_on_the_sink_or_the_relay(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def handler(event: dict[str, Any]) -> None:
        received.append(event)

    store = await seeded(runs=1, events=1)
    path = tmp_path / "e.jsonl"
    await relay_all(store, path.as_uri() + "?source=https://billing.example/eu")
    assert json.loads(path.read_text())["source"] == "https://billing.example/eu"
    store = await seeded(runs=1, events=1)
    sink = CallableSink(handler)
    await Relay(store, sink, source="/billing/eu", metrics=RelayMetrics(export=False)).run_once()
    assert received[0]["source"] == "/billing/eu"
    with pytest.raises(InvalidInput, match="URI reference"):
        Relay(store, sink, source="has spaces")


# -- stdout: only the events ----------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True])
def test_relay_to_stdout_writes_only_events_there(tmp_path: Path, as_json: bool) -> None:
    url = f"sqlite:///{tmp_path / 'out.db'}"

    async def seed() -> str:
        async with open_store(url) as store:
            await seeded(store=store)
            assert isinstance(store, OutboxStore)
            return await store.store_id()

    store_id = asyncio.run(seed())
    command = [*RUNSTATE, "--debug", "relay", "--url", url, "--sink", "stdout://", "--once"]
    done = subprocess.run(
        command + (["--json"] if as_json else []), capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    events = [JSONFormat().read(None, line) for line in lines]
    assert len(events) == 6
    assert {e.get_source() for e in events} == {f"runstate://{store_id}"}
    # The report and the debug logs went to stderr.
    assert b"6 delivered" in done.stderr or b'"delivered": 6' in done.stderr
    assert b"relay" in done.stderr


# -- metrics: current at scrape time, and what promtool accepts --------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_backlog_gauges_are_current_at_scrape_time_and_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool is missing (Debian's prometheus package provides it)"
        if IN_CI:
            pytest.fail(f"{message}; CI=true: .ci/run installs it")
        pytest.skip(message)
    registry = prometheus_client.CollectorRegistry()
    metrics = RelayMetrics(registry=registry)
    port = free_port()
    server, thread = prometheus_client.start_http_server(port, "127.0.0.1", registry=registry)
    gate, holding = asyncio.Event(), asyncio.Event()

    async def handler(event: dict[str, Any]) -> None:
        holding.set()
        await gate.wait()

    store = await seeded(runs=1, events=1)
    # A stats interval of an hour: whatever a scrape shows was read for it.
    relay = Relay(store, CallableSink(handler), metrics=metrics, stats_interval=3600)
    running = asyncio.ensure_future(relay.run_forever())

    async def scrape() -> str:
        response = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200
        return response.text

    def gauge(text: str, name: str) -> float:
        (line,) = [row for row in text.splitlines() if row.startswith(name + " ")]
        return float(line.split()[1])

    try:
        await holding.wait()  # the relay holds the first run's record in flight
        await seeded(runs=6, events=1, store=store, prefix="more")
        await asyncio.sleep(1.05)  # past the 1 s cache of the relay's first look at the backlog
        text = await scrape()
        assert (
            gauge(text, "runstate_outbox_pending"),
            gauge(text, "runstate_outbox_in_flight"),
        ) == (
            6.0,
            1.0,
        )
        await seeded(runs=1, events=1, store=store, prefix="late")
        await asyncio.sleep(1.05)  # past the 1 s cache
        text = await scrape()
        assert gauge(text, "runstate_outbox_pending") == 7.0
        checked = await asyncio.to_thread(
            subprocess.run,
            [promtool, "check", "metrics"],
            input=text.encode(),
            capture_output=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        gate.set()
        relay.stop()
        await running
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_metrics_host_binds_the_address_given(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    port = free_port()
    command = [*RUNSTATE, "relay", "--url", url, "--sink", (tmp_path / "e.jsonl").as_uri()]
    relay = subprocess.Popen(
        [*command, "--metrics-port", str(port), "--metrics-host", "127.0.0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        text = ""
        for _ in range(400):
            with contextlib.suppress(httpx.HTTPError):
                text = httpx.get(f"http://127.0.0.2:{port}/metrics", timeout=1).text
                break
            if relay.poll() is not None:
                break
            time.sleep(0.05)
        assert "runstate_outbox_pending" in text
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
    finally:
        relay.terminate()
        relay.communicate(timeout=20)
    bad = subprocess.run(
        [*command, "--once", "--metrics-port", str(port), "--metrics-host", "256.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1
    assert "cannot serve metrics on 256.0.0.1" in bad.stderr
