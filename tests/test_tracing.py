"""OpenTelemetry: one trace from an engine command through the store write to the relay's publish.

The spans are recorded by the real SDK (in-memory exporter) through
``runstate.tracing.use_tracer_provider``, so no other test sees a configured provider. The
consumers are real: a JetStream stream read back, an HTTP receiver, a RabbitMQ queue, a Redis
stream. What the store keeps is read from its own tables, not through runstate.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conftest import (
    POSTGRES_URL,
    drop_postgres_schema,
    loopback_server,
    require_service,
    unique_schema,
)
from runstate import MemoryStore, RunEngine, RunMetadata, RunNotFound, RunStateStore, open_store
from runstate.relay import Relay
from runstate.sinks import CallableSink, PermanentDeliveryError, open_sink
from runstate.store import OutboxStore
from runstate.tracing import current_trace_context, use_tracer_provider
from test_sinks import Receiver, stream_messages


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The SDK recording runstate's spans in memory for one test (the global stays unset)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        use_tracer_provider(None)
        provider.shutdown()


def outbox(store: RunStateStore) -> OutboxStore:
    """The store as the relay sees it."""
    assert isinstance(store, OutboxStore)
    return store


def traceparent_of(span: ReadableSpan) -> str:
    """The W3C traceparent a span's context is written as."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def only(found: list[ReadableSpan]) -> ReadableSpan:
    """The one span of a search."""
    assert len(found) == 1, [span.name for span in found]
    return found[0]


def command_trace(
    exporter: InMemorySpanExporter, command: str, run_id: str, seq: int
) -> tuple[ReadableSpan, ReadableSpan, ReadableSpan]:
    """The command's span, its store write and the publish of event ``seq``: one trace."""
    finished = list(exporter.get_finished_spans())
    engine = only([s for s in finished if s.name == f"RunEngine.{command}"])
    write = only([s for s in finished if s.parent and s.parent.span_id == engine.context.span_id])
    publish = only(
        [
            s
            for s in finished
            if s.kind is SpanKind.PRODUCER
            and s.attributes
            and s.attributes["messaging.message.id"] == f"{run_id}:{seq}"
        ]
    )
    assert engine.parent is None
    assert write.kind is SpanKind.CLIENT
    assert publish.parent is not None
    assert publish.parent.span_id == write.context.span_id
    assert engine.context.trace_id == write.context.trace_id == publish.context.trace_id
    return engine, write, publish


async def sqlite_traces(path: Path, run_id: str) -> dict[int, tuple[str, str | None]]:
    """seq -> (traceparent, tracestate) as the SQLite file holds them."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT e.seq, t.traceparent, t.tracestate FROM runstate_event_traces AS t "
            "JOIN runstate_events AS e ON e.position = t.position WHERE e.run_id = ?",
            (run_id,),
        ).fetchall()
    return {seq: (parent, state) for seq, parent, state in rows}


async def postgres_traces(schema: str, run_id: str) -> dict[int, tuple[str, str | None]]:
    """seq -> (traceparent, tracestate) as the PostgreSQL schema holds them."""
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        rows = await connection.fetch(
            f'SELECT e.seq, t.traceparent, t.tracestate FROM "{schema}".run_event_traces AS t '  # noqa: S608
            f'JOIN "{schema}".run_events AS e ON e.position = t.position WHERE e.run_id = $1',
            run_id,
        )
    finally:
        await connection.close()
    return {row["seq"]: (row["traceparent"], row["tracestate"]) for row in rows}


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A SQLite file or a fresh PostgreSQL schema (dropped afterwards): its name."""
    if request.param == "sqlite":
        yield str(tmp_path / "traced.db")
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    schema = unique_schema()
    try:
        yield schema
    finally:
        await drop_postgres_schema(schema)


async def test_one_trace_from_engine_start_to_the_nats_consumer(
    backend: str, spans: InMemorySpanExporter, nats_stream: tuple[str, str]
) -> None:
    stream, prefix = nats_stream
    sqlite = backend.endswith(".db")
    url = f"sqlite:///{backend}" if sqlite else f"{POSTGRES_URL}?schema={backend}"
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    async with open_store(url) as store:
        engine = RunEngine(store)
        await engine.create_run(RunMetadata(run_id=run_id, workflow="wf"))
        await engine.start(run_id)
        sink_url = f"nats://127.0.0.1:4222?subject={prefix}.{{workflow}}&stream={stream}"
        async with open_sink(sink_url) as sink:
            report = await Relay(outbox(store), sink).run_once()
    assert report.delivered == 2
    if sqlite:
        stored = await sqlite_traces(Path(backend), run_id)
    else:
        stored = await postgres_traces(backend, run_id)

    engine_span, write, publish = command_trace(spans, "start", run_id, 2)
    assert stored[2] == (traceparent_of(write), None)
    messages = await stream_messages(stream)
    received = {body["seq"]: (body, headers) for body, headers in messages}
    for seq in (1, 2):
        body, headers = received[seq]
        # The consumer gets exactly the stored context: in the CloudEvent (distributed
        # tracing extension) and in the NATS headers.
        assert body["traceparent"] == headers["traceparent"] == stored[seq][0]
        assert "tracestate" not in body
    assert publish.attributes is not None
    assert dict(publish.attributes) == {
        "messaging.system": "nats",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": f"{prefix}.wf",
        "messaging.message.id": f"{run_id}:2",
        "cloudevents.event_id": f"{run_id}:2",
        "cloudevents.event_type": "RunStarted",
        "cloudevents.event_subject": run_id,
        "runstate.run_id": run_id,
        "runstate.event.seq": 2,
        "runstate.delivery.attempt": 1,
        "runstate.delivery.outcome": "delivered",
    }
    assert write.name == f"append_and_enqueue_tx {write.attributes['db.namespace']}"  # type: ignore[index]
    assert write.attributes is not None
    assert write.attributes["db.system.name"] == ("sqlite" if sqlite else "postgresql")
    assert write.attributes["db.operation.name"] == "append_and_enqueue_tx"
    assert engine_span.attributes is not None
    assert engine_span.attributes["runstate.run.status"] == "RUNNING"
    # create_run's bootstrap is a trace of its own, stored with the first event.
    bootstrap = only([s for s in spans.get_finished_spans() if s.name.startswith("bootstrap")])
    assert stored[1] == (traceparent_of(bootstrap), None)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """An HTTP receiver on a free loopback port (test_sinks' scripted one, answering 200)."""
    state = Receiver()
    async with loopback_server(state.handle) as port:
        state.port = port
        yield state


async def test_postgres_webhook_receiver_gets_the_stored_traceparent_and_tracestate(
    spans: InMemorySpanExporter, schema: str, receiver: Receiver
) -> None:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    # An upstream trace with vendor state, as a web framework would extract from a request.
    upstream = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0xB7AD6B7169203331,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
            trace_state=trace.TraceState([("vendor", "opaque-1")]),
        )
    )
    async with open_store(f"{POSTGRES_URL}?schema={schema}") as store:
        engine = RunEngine(store)
        token = otel_context.attach(trace.set_span_in_context(upstream))
        try:
            await engine.create_run(RunMetadata(run_id=run_id, workflow="wf"), mode="sync")
        finally:
            otel_context.detach(token)
        async with open_sink(f"http://127.0.0.1:{receiver.port}/hook") as sink:
            await Relay(outbox(store), sink).run_once()
    stored = await postgres_traces(schema, run_id)
    write = only([s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT])
    assert write.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    # mode="sync" bootstraps RunQueued and RunStarted in one write: both carry its trace.
    assert stored == {seq: (traceparent_of(write), "vendor=opaque-1") for seq in (1, 2)}
    assert len(receiver.requests) == 2
    for headers, body in receiver.requests:
        envelope = json.loads(body)
        assert headers["traceparent"] == envelope["traceparent"] == traceparent_of(write)
        assert headers["tracestate"] == envelope["tracestate"] == "vendor=opaque-1"
    publishes = [s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert [s.attributes["messaging.system"] for s in publishes] == ["http", "http"]  # type: ignore[index]
    assert {s.parent.span_id for s in publishes if s.parent} == {write.context.span_id}


async def test_webhook_binary_mode_sends_the_trace_as_headers(
    spans: InMemorySpanExporter, receiver: Receiver
) -> None:
    store = MemoryStore()
    await RunEngine(store).create_run(RunMetadata(run_id="r", workflow="wf"))
    async with open_sink(f"http://127.0.0.1:{receiver.port}/hook#mode=binary") as sink:
        await Relay(store, sink).run_once()
    write = only([s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT])
    ((headers, _),) = receiver.requests
    assert headers["traceparent"] == headers["ce-traceparent"] == traceparent_of(write)


async def test_rabbitmq_and_redis_carry_the_trace_in_their_own_headers(
    spans: InMemorySpanExporter, rabbitmq_exchange: tuple[str, Any]
) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    import redis.asyncio

    exchange, queue = rabbitmq_exchange
    key = f"rs-test:{uuid.uuid4().hex[:12]}"
    store = MemoryStore()
    await RunEngine(store).create_run(RunMetadata(run_id="r", workflow="wf"))
    write = only([s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT])
    expected = traceparent_of(write)
    amqp = f"amqp://guest:guest@127.0.0.1:5672/%2F?exchange={exchange}&routing_key=k"
    for sink_url in (amqp, f"redis://127.0.0.1:6379/0?stream={key}"):
        records = await store.claim_outbox_batch(owner="t", limit=10, lease_seconds=30)
        assert [r.traceparent for r in records] == [expected]
        async with open_sink(sink_url) as sink:
            assert [o.status.value for o in await sink.publish(records)] == ["delivered"]
        await store.release_outbox([r.outbox_id for r in records], owner="t")
    message = await queue.get(timeout=5)
    await message.ack()
    assert message.headers["traceparent"] == json.loads(message.body)["traceparent"] == expected
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        entries: Any = await client.xrange(key)
        ((_, fields),) = entries
        assert fields[b"traceparent"].decode() == expected
        assert json.loads(fields[b"data"])["traceparent"] == expected
    finally:
        await client.delete(key)
        await client.aclose()


async def test_a_failed_publish_and_a_refused_write_are_error_spans(
    spans: InMemorySpanExporter,
) -> None:
    store = MemoryStore()
    engine = RunEngine(store)
    await engine.create_run(RunMetadata(run_id="r", workflow="wf"))
    with pytest.raises(RunNotFound):
        await store.append_and_enqueue_tx("missing", [])

    async def refuse(_: dict[str, Any]) -> None:
        raise PermanentDeliveryError("no")

    report = await Relay(store, CallableSink(refuse)).run_once()
    assert report.dead == 1
    finished = spans.get_finished_spans()
    refused = only([s for s in finished if s.attributes.get("runstate.run_id") == "missing"])  # type: ignore[union-attr]
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes is not None
    assert refused.attributes["error.type"] == "RUN_NOT_FOUND"
    publish = only([s for s in finished if s.kind is SpanKind.PRODUCER])
    assert publish.status.status_code is StatusCode.ERROR
    assert publish.attributes is not None
    assert publish.attributes["runstate.delivery.outcome"] == "dead"
    assert publish.attributes["messaging.system"] == "callable"


async def test_the_remote_store_passes_the_trace_to_the_server(
    spans: InMemorySpanExporter,
) -> None:
    from _http_server import serving, store_url_of

    name = f"traced-{uuid.uuid4().hex[:8]}"
    with serving(f"memory://{name}") as server:
        async with open_store(store_url_of(server)) as remote:
            await RunEngine(remote).create_run(RunMetadata(run_id="r", workflow="wf"))
    local = await open_store(f"memory://{name}")
    records = await local.claim_outbox_batch(owner="t", limit=10, lease_seconds=30)  # type: ignore[attr-defined]
    finished = spans.get_finished_spans()
    client = only([s for s in finished if s.attributes.get("db.system.name") == "runstate"])  # type: ignore[union-attr]
    server_write = only([s for s in finished if s.attributes.get("db.system.name") == "memory"])  # type: ignore[union-attr]
    assert server_write.parent is not None
    assert server_write.parent.span_id == client.context.span_id
    assert [r.traceparent for r in records] == [traceparent_of(server_write)]
    await local.close()


def test_the_sync_api_stores_the_trace_of_its_commands(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    from runstate.sync import RunEngine as SyncEngine
    from runstate.sync import open_store as open_sync

    with open_sync(f"sqlite:///{tmp_path / 'sync.db'}") as store:
        engine = SyncEngine(store)
        engine.create_run(RunMetadata(run_id="r", workflow="wf"))
        engine.start("r")
        records = store.claim_outbox_batch(owner="t", limit=10, lease_seconds=30)  # type: ignore[attr-defined]
    finished = spans.get_finished_spans()
    start = only([s for s in finished if s.name == "RunEngine.start"])
    write = only([s for s in finished if s.parent and s.parent.span_id == start.context.span_id])
    assert records[1].traceparent == traceparent_of(write)


async def test_installed_but_unconfigured_stores_nothing() -> None:
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("another test set a global tracer provider in this process")
    store = MemoryStore()
    await RunEngine(store).create_run(RunMetadata(run_id="r", workflow="wf"))
    assert current_trace_context() is None
    (record,) = await store.claim_outbox_batch(owner="t", limit=10, lease_seconds=30)
    assert (record.traceparent, record.tracestate) == (None, None)


_WITHOUT_OTEL = r"""
import asyncio, importlib.abc, json, sqlite3, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, Refuse())

import runstate.tracing as tracing
from runstate import MemoryStore, RunEngine, RunMetadata, open_store
from runstate.adapters.sqlite._store import SQLiteStore
from runstate.relay import Relay
from runstate.sinks import CallableSink

assert not tracing.ENABLED
assert tracing.current_trace_context() is None and tracing.trace_headers() == {}
# The decorators hand back the very functions they were given: no wrapper, no cost.
for method in (RunEngine.start, SQLiteStore.append_and_enqueue_tx, MemoryStore.bootstrap_run_tx):
    assert not hasattr(method, "__wrapped__"), method

async def main(path):
    received = []

    async def handler(envelope):
        received.append(envelope)

    async with open_store(f"sqlite:///{path}") as store:
        engine = RunEngine(store)
        await engine.create_run(RunMetadata(run_id="r", workflow="wf"))
        await engine.start("r")
        report = await Relay(store, CallableSink(handler)).run_once()
    assert report.delivered == 2, report
    assert all("traceparent" not in e and "tracestate" not in e for e in received), received
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM runstate_event_traces").fetchone() == (0,)
    assert not any(name.startswith("opentelemetry") for name in sys.modules)
    print(json.dumps([e["type"] for e in received]))

asyncio.run(main(sys.argv[1]))
"""


def test_without_opentelemetry_nothing_is_traced_or_stored(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL, str(tmp_path / "plain.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["RunQueued", "RunStarted"]


async def test_concurrent_traced_writes_in_one_statement_keep_their_own_traces(
    backend: str,
) -> None:
    # Group commit puts concurrent writes of several runs into one statement: each run's
    # events must get the trace of the call that wrote them (a write made outside any span
    # starts a trace of its own).
    from runstate import RunEventInput
    from runstate.testing.contract import bootstrap_input, new_run_id

    url = f"sqlite:///{backend}" if backend.endswith(".db") else f"{POSTGRES_URL}?schema={backend}"
    provider = TracerProvider()
    use_tracer_provider(provider)
    tracer = provider.get_tracer("test")
    store = await open_store(url)
    runs = [new_run_id() for _ in range(8)]
    expected: dict[str, str | None] = {}

    async def write(index: int, run_id: str) -> None:
        if index % 3 == 2:
            await store.bootstrap_run_tx(bootstrap_input(run_id, "A", "B"))
            await store.append_and_enqueue_tx(run_id, [RunEventInput(type="C")] * 1)
            expected[run_id] = None
            return
        with tracer.start_as_current_span(f"writer-{index}") as span:
            await store.bootstrap_run_tx(bootstrap_input(run_id, "A", "B"))
            await store.append_and_enqueue_tx(run_id, [RunEventInput(type="C")])
            expected[run_id] = f"{span.get_span_context().trace_id:032x}"

    try:
        await asyncio.gather(*(write(i, run_id) for i, run_id in enumerate(runs)))
    finally:
        await store.close()
        use_tracer_provider(None)
        provider.shutdown()
    for run_id in runs:
        if backend.endswith(".db"):
            stored = await sqlite_traces(Path(backend), run_id)
        else:
            stored = await postgres_traces(backend, run_id)
        want = expected[run_id]
        trace_ids = {parent.split("-")[1] for parent, _ in stored.values()}
        assert sorted(stored) == [1, 2, 3], run_id
        if want is None:
            assert not trace_ids & set(expected.values()), run_id
        else:
            assert trace_ids == {want}, run_id
