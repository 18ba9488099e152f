"""Engine commands over HTTP: creation, transitions, Idempotency-Key, INVALID_TRANSITION;
and the outbox status, re-drive and long-poll routes."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from _http_server import serving
from runstate.server import ServerThread


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One server on SQLite for the module."""
    with serving(f"sqlite:///{tmp_path_factory.mktemp('engine') / 'e.db'}") as running:
        yield running


def _command(
    server: ServerThread, run_id: str, name: str, body: object = None, key: str | None = None
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    if body is None:
        return httpx.post(f"{server.url}/v1/runs/{run_id}/{name}", headers=headers)
    return httpx.post(f"{server.url}/v1/runs/{run_id}/{name}", json=body, headers=headers)


def _events(server: ServerThread, run_id: str) -> list[dict[str, object]]:
    return httpx.get(f"{server.url}/v1/runs/{run_id}/events").json()["events"]  # type: ignore[no-any-return]


def test_a_run_through_its_lifecycle(server: ServerThread) -> None:
    run_id = f"run-{uuid.uuid4().hex}"
    created = _command(server, run_id, "create", {"workflow": "etl", "tenant_id": "acme"})
    assert created.status_code == 201
    assert created.json()["status"] == "QUEUED"
    assert _command(server, run_id, "start", {"worker": "w-1"}).json()["status"] == "RUNNING"
    step = {"type": "StepStarted", "payload": {"step": "extract"}}
    recorded = _command(server, run_id, "record", step)
    assert recorded.json()["current_step"] == "extract"
    done = _command(server, run_id, "succeed", {"output": {"rows": 2**64}})
    assert done.json()["status"] == "SUCCEEDED"
    assert done.json()["output"] == {"rows": 2**64}
    view = httpx.get(f"{server.url}/v1/runs/{run_id}").json()
    assert view["state"]["is_terminal"] is True
    assert view["metadata"]["tenant_id"] == "acme"
    types = [e["type"] for e in _events(server, run_id)]
    assert types == ["RunQueued", "RunStarted", "StepStarted", "RunSucceeded"]


def test_sync_creation_starts_the_run(server: ServerThread) -> None:
    run_id = f"run-{uuid.uuid4().hex}"
    created = _command(server, run_id, "create", {"workflow": "w", "mode": "sync"}, key="c1")
    assert created.json()["status"] == "RUNNING"
    again = _command(server, run_id, "create", {"workflow": "w", "mode": "sync"}, key="c1")
    assert again.status_code == 201
    other = _command(server, run_id, "create", {"workflow": "other"})
    assert other.status_code == 409
    assert other.json()["code"] == "RUN_ALREADY_EXISTS"
    assert other.json()["same_request"] is False
    assert len(_events(server, run_id)) == 2


def test_idempotency_key_makes_a_retried_command_a_no_op(server: ServerThread) -> None:
    run_id = f"run-{uuid.uuid4().hex}"
    _command(server, run_id, "create", {"workflow": "w"})
    first = _command(server, run_id, "start", key="start-1")
    retried = _command(server, run_id, "start", key="start-1")
    assert first.status_code == retried.status_code == 200
    assert first.json()["last_seq"] == retried.json()["last_seq"] == 2
    record = {"type": "Note", "payload": {"n": 1}}
    assert _command(server, run_id, "record", record, key="note-1").json()["last_seq"] == 3
    assert _command(server, run_id, "record", record, key="note-1").json()["last_seq"] == 3
    assert [e["event_id"] for e in _events(server, run_id)][1:] == ["start-1", "note-1"]
    mismatch = _command(server, run_id, "record", {**record, "event_id": "x"}, key="note-2")
    assert mismatch.status_code == 400
    assert mismatch.json()["field"] == "event_id"
    bad_key = _command(server, run_id, "pause", key="k" * 201)
    assert bad_key.status_code == 400
    assert bad_key.json()["field"] == "Idempotency-Key"


def test_illegal_transitions_are_409_with_the_fields(server: ServerThread) -> None:
    run_id = f"run-{uuid.uuid4().hex}"
    _command(server, run_id, "create", {"workflow": "w"})
    refused = _command(server, run_id, "pause")
    assert refused.status_code == 409
    problem = refused.json()
    assert (problem["code"], problem["from_status"], problem["event_type"], problem["run_id"]) == (
        "INVALID_TRANSITION",
        "QUEUED",
        "RunPaused",
        run_id,
    )
    assert len(_events(server, run_id)) == 1
    missing = _command(server, f"run-{uuid.uuid4().hex}", "start")
    assert missing.status_code == 404
    assert missing.json()["code"] == "RUN_NOT_FOUND"
    wrong = _command(server, run_id, "start", {"worker": 5})
    assert wrong.status_code == 400
    unknown = _command(server, run_id, "start", {"workr": "w"})
    assert unknown.status_code == 400


def test_outbox_status_redrive_and_long_poll(server: ServerThread) -> None:
    stats = httpx.get(f"{server.url}/v1/outbox").json()
    assert set(stats) == {"pending", "in_flight", "dead", "delivered", "oldest_pending_at"}
    run_id = f"run-{uuid.uuid4().hex}"
    _command(server, run_id, "create", {"workflow": "w"})
    claimed = httpx.post(
        f"{server.url}/v1/outbox/claim", json={"owner": "t", "limit": 10_000, "lease_seconds": 30}
    ).json()["records"]
    mine = [r for r in claimed if r["event"]["run_id"] == run_id]
    assert mine[0]["message_id"] == f"{run_id}:1"
    failed = {"owner": "t", "outbox_id": mine[0]["outbox_id"], "error": "boom", "retry_at": None}
    assert httpx.post(f"{server.url}/v1/outbox/failed", json=failed).status_code == 204
    assert httpx.get(f"{server.url}/v1/outbox").json()["dead"] >= 1
    redriven = httpx.post(f"{server.url}/v1/outbox/redrive", json={"run_id": run_id})
    assert redriven.json() == {"redriven": 1}
    started = time.monotonic()
    waited = httpx.post(f"{server.url}/v1/outbox/wait", json={"timeout": 0.2})
    assert waited.status_code == 204
    assert time.monotonic() - started < 5
    too_long = httpx.post(f"{server.url}/v1/outbox/wait", json={"timeout": 61})
    assert too_long.status_code == 400
    assert json.loads(too_long.content)["field"] == "timeout"
