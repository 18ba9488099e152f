"""Server-Sent Events: the store-wide feed and one run's events, live and resumable."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from _http_server import serving, store_url_of
from runstate import RunEventInput, RunStateStore, open_store
from runstate.server import ServerThread
from runstate.testing.contract import bootstrap_input


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One server on SQLite for the module."""
    with serving(f"sqlite:///{tmp_path_factory.mktemp('live') / 'l.db'}") as running:
        yield running


@pytest.fixture
async def store(server: ServerThread) -> AsyncIterator[RunStateStore]:
    """A runstate+http store on the server."""
    async with open_store(store_url_of(server)) as opened:
        yield opened


async def _read_sse(
    response: httpx.Response, want: int, run_ids: set[str]
) -> list[tuple[str | None, dict[str, object]]]:
    """Read SSE messages until ``want`` events of ``run_ids``; return (last id, event)."""
    seen: list[tuple[str | None, dict[str, object]]] = []
    last_id: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            last_id = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            event = json.loads("\n".join(data))
            data = []
            if event["run_id"] in run_ids:
                seen.append((last_id, event))
                if len(seen) == want:
                    return seen
    return seen


async def test_feed_stream_sees_events_committed_after_it_started(
    server: ServerThread, store: RunStateStore
) -> None:
    run_id = f"run-{uuid.uuid4().hex}"
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/v1/feed/stream") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = asyncio.create_task(_read_sse(response, 3, {run_id}))
        await asyncio.sleep(0.1)
        await store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued", "RunStarted"))
        await store.append_and_enqueue_tx(run_id, [RunEventInput(type="StepStarted")])
        seen = await asyncio.wait_for(reader, 10)
    assert [(e["run_id"], e["seq"]) for _, e in seen] == [(run_id, 1), (run_id, 2), (run_id, 3)]
    last_cursor = seen[-1][0]
    assert last_cursor is not None
    # Resuming from the last id skips what was seen and delivers what came after.
    await store.append_and_enqueue_tx(run_id, [RunEventInput(type="StepSucceeded")])
    headers = {"Last-Event-ID": last_cursor}
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/v1/feed/stream", headers=headers) as response,
    ):
        (resumed,) = await asyncio.wait_for(_read_sse(response, 1, {run_id}), 10)
    assert resumed[1]["seq"] == 4


async def test_run_stream_uses_seqs_as_ids_and_resumes(
    server: ServerThread, store: RunStateStore
) -> None:
    run_id = f"run-{uuid.uuid4().hex}"
    await store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued", "RunStarted"))
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        client.stream("GET", f"/v1/runs/{run_id}/events/stream") as response,
    ):
        reader = asyncio.create_task(_read_sse(response, 3, {run_id}))
        await asyncio.sleep(0.1)
        await store.append_and_enqueue_tx(run_id, [RunEventInput(type="Live")])
        seen = await asyncio.wait_for(reader, 10)
    assert [(i, e["seq"]) for i, e in seen] == [("1", 1), ("2", 2), ("3", 3)]
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        client.stream(
            "GET", f"/v1/runs/{run_id}/events/stream", headers={"Last-Event-ID": "2"}
        ) as response,
    ):
        (after,) = await asyncio.wait_for(_read_sse(response, 1, {run_id}), 10)
    assert after == ("3", seen[2][1])


async def test_streams_refuse_bad_starts_with_problems(server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        missing = await client.get(f"/v1/runs/run-{uuid.uuid4().hex}/events/stream")
        assert missing.status_code == 404
        assert missing.json()["code"] == "RUN_NOT_FOUND"
        bad_cursor = await client.get("/v1/feed/stream", headers={"Last-Event-ID": "garbage"})
        assert bad_cursor.status_code == 400
        bad_seq = await client.get("/v1/runs/r/events/stream?after_seq=-3")
        assert bad_seq.status_code == 400


async def test_idle_streams_send_keep_alives(server: ServerThread) -> None:
    # The test server's heartbeat is 0.5 s.
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/v1/feed/stream") as response,
    ):
        lines: list[str] = []
        async for line in response.aiter_lines():
            lines.append(line)
            if line == ": keep-alive":
                break
        metrics = (await client.get("/metrics")).text
    assert lines[0] == "retry: 1000"
    assert "# TYPE runstate_http_open_streams gauge" in metrics
