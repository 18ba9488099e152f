"""Bad input at the HTTP edge: a clear 4xx problem, never a 500, and nothing written;
and JSON that round-trips exactly, big integers included."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from _http_server import serving
from runstate.server import ServerThread


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One server on SQLite for the module (every test uses fresh run ids)."""
    path = tmp_path_factory.mktemp("input") / "input.db"
    with serving(f"sqlite:///{path}", max_payload_bytes=4096) as running:
        yield running


def _run_id() -> str:
    return f"run-{uuid.uuid4().hex}"


def _body(run_id: str, **metadata: object) -> dict[str, object]:
    return {
        "metadata": {"run_id": run_id, "workflow": "wf", **metadata},
        "first_events": [{"type": "RunQueued", "event_id": "q"}],
    }


def _post(server: ServerThread, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        content=content,
        headers={"Content-Type": "application/json", **headers},
    )


def _exists(server: ServerThread, run_id: str) -> bool:
    status = httpx.get(f"{server.url}/v1/runs/{run_id}/metadata").status_code
    assert status in (200, 404)
    return status == 200


@pytest.mark.parametrize(
    ("label", "template", "field"),
    [
        ("malformed JSON", b'{"metadata": {"run_id": "RID", ', "body"),
        ("NaN literal", b'{"metadata": {"run_id": "RID", "workflow": "w", "input": NaN}}', "body"),
        ("not an object", b'["RID"]', "body"),
        ("unknown top field", b'{"metadata": {"run_id": "RID", "workflow": "w"}, "x": 1}', "body"),
        (
            "unknown metadata field",
            b'{"metadata": {"run_id": "RID", "workflow": "w", "owner": "me"},'
            b' "first_events": [{"type": "RunQueued"}]}',
            "metadata",
        ),
        (
            "int run_id",
            b'{"metadata": {"run_id": 7, "workflow": "w"}, "first_events": [{"type": "Q"}]}',
            "metadata.run_id",
        ),
        (
            "labels not strings",
            b'{"metadata": {"run_id": "RID", "workflow": "w", "labels": {"k": 1}},'
            b' "first_events": [{"type": "Q"}]}',
            "metadata.labels",
        ),
        (
            "naive created_at",
            b'{"metadata": {"run_id": "RID", "workflow": "w", "created_at": "2026-01-01T00:00:00"},'
            b' "first_events": [{"type": "Q"}]}',
            "metadata.created_at",
        ),
        (
            "date only",
            b'{"metadata": {"run_id": "RID", "workflow": "w", "created_at": "2026-01-01"},'
            b' "first_events": [{"type": "Q"}]}',
            "metadata.created_at",
        ),
        (
            "no events",
            b'{"metadata": {"run_id": "RID", "workflow": "w"}, "first_events": []}',
            "first_events",
        ),
        (
            "payload array",
            b'{"metadata": {"run_id": "RID", "workflow": "w"},'
            b' "first_events": [{"type": "Q", "payload": [1]}]}',
            "first_events[0].payload",
        ),
        (
            "bool schema_version",
            b'{"metadata": {"run_id": "RID", "workflow": "w"},'
            b' "first_events": [{"type": "Q", "schema_version": true}]}',
            "first_events[0].schema_version",
        ),
        (
            "NUL in payload",
            b'{"metadata": {"run_id": "RID", "workflow": "w"},'
            b' "first_events": [{"type": "Q", "payload": {"v": "a\\u0000"}}]}',
            "events[0].payload",
        ),
        (
            "payload over the limit",
            b'{"metadata": {"run_id": "RID", "workflow": "w"},'
            b' "first_events": [{"type": "Q", "payload": {"v": "' + b"x" * 5000 + b'"}}]}',
            "events[0].payload",
        ),
        (
            "integer of 5000 digits",
            b'{"metadata": {"run_id": "RID", "workflow": "w", "input": ' + b"9" * 5000 + b"}}",
            "body",
        ),
        ("deep nesting", b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body"),
        ("invalid UTF-8", b'{"metadata": {"run_id": "\xff\xfe", "workflow": "w"}}', "body"),
    ],
)
def test_bad_bootstrap_bodies_are_400_and_write_nothing(
    server: ServerThread, label: str, template: bytes, field: str
) -> None:
    run_id = _run_id()
    response = _post(server, "/v1/runs", template.replace(b"RID", run_id.encode()))
    assert response.status_code == 400, (label, response.text)
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "INVALID_INPUT"
    assert problem["status"] == 400
    assert problem["field"] == field, problem
    assert problem["detail"]
    assert not _exists(server, run_id)


def test_oversized_body_is_413(server: ServerThread) -> None:
    run_id = _run_id()
    big = json.dumps(_body(run_id, input="x" * (9 * 1024 * 1024))).encode()
    response = _post(server, "/v1/runs", big)
    assert response.status_code == 413
    assert response.json()["code"] == "BODY_TOO_LARGE"
    assert not _exists(server, run_id)


def test_body_needs_the_json_media_type(server: ServerThread) -> None:
    run_id = _run_id()
    body = json.dumps(_body(run_id)).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = _post(server, "/v1/runs", body, **{"Content-Type": content_type})
        assert response.status_code == 415
    assert not _exists(server, run_id)
    assert _post(server, "/v1/runs", body, **{"Content-Type": "application/json; charset=utf-8"})


def test_bad_query_parameters_are_400(server: ServerThread) -> None:
    for query in (
        "after_seq=-1",
        "after_seq=1e3",
        "after_seq=99999999999999999999",
        "limit=100000",
        "bogus=1",
        "limit=1&limit=2",
    ):
        response = httpx.get(f"{server.url}/v1/runs/r/events?{query}")
        assert response.status_code == 400, query
        assert response.json()["code"] == "INVALID_INPUT"
    for query in ("cursor=abc", "since=yesterday", "status=DONE", "limit=-1"):
        response = httpx.get(f"{server.url}/v1/runs?{query}")
        assert response.status_code == 400, query
    assert httpx.get(f"{server.url}/v1/feed?cursor=nope").status_code == 400


def test_expected_seq_out_of_range_is_400(server: ServerThread) -> None:
    run_id = _run_id()
    assert _post(server, "/v1/runs", json.dumps(_body(run_id)).encode()).status_code == 201
    for expected in ("-1", "true", "1.5", str(2**64), '"1"'):
        body = b'{"events": [{"type": "A"}], "expected_seq": ' + expected.encode() + b"}"
        response = _post(server, f"/v1/runs/{run_id}/events", body)
        assert response.status_code == 400, expected
        assert response.json()["field"] == "expected_seq"
    events = httpx.get(f"{server.url}/v1/runs/{run_id}/events").json()["events"]
    assert len(events) == 1


def test_payloads_round_trip_exactly_big_integers_too(server: ServerThread) -> None:
    run_id = _run_id()
    payload_text = (
        '{"big":1180591620717411303424,"neg":-12345678901234567890,"tiny":5e-324,'
        '"huge":1.7976931348623157e+308,"f":0.1,"s":"h\\u00e9llo \\ud834\\udd1e \\u2028",'
        '"nested":{"a":[[[]]],"":null},"t":true}'
    )
    body = (
        '{"metadata":{"run_id":"' + run_id + '","workflow":"wf","input":' + payload_text + "},"
        '"first_events":[{"type":"RunQueued","payload":' + payload_text + "}]}"
    )
    created = _post(server, "/v1/runs", body.encode())
    assert created.status_code == 201
    expected = json.loads(payload_text)
    (event,) = json.loads(httpx.get(f"{server.url}/v1/runs/{run_id}/events").content)["events"]
    assert event["payload"] == expected
    assert event["payload"]["big"] == 2**70
    assert repr(event["payload"]) == repr(expected)
    metadata = json.loads(httpx.get(f"{server.url}/v1/runs/{run_id}/metadata").content)
    assert repr(metadata["input"]) == repr(expected)


def test_run_ids_with_slashes_dots_and_unicode_are_addressable(server: ServerThread) -> None:
    for run_id in ("a/b", "..", ".", "x?y#z", "ünï cödé", "%2F"):
        body = {"metadata": {"run_id": run_id, "workflow": "w"}, "first_events": [{"type": "Q"}]}
        assert _post(server, "/v1/runs", json.dumps(body).encode()).status_code == 201, run_id
        segment = quote(run_id, safe="").replace(".", "%2E")
        response = httpx.get(f"{server.url}/v1/runs/{segment}/metadata")
        assert response.status_code == 200, run_id
        assert response.json()["run_id"] == run_id


def test_unknown_routes_and_methods(server: ServerThread) -> None:
    assert httpx.get(f"{server.url}/v2/runs").json()["code"] == "NOT_FOUND"
    response = httpx.delete(f"{server.url}/v1/runs")
    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"
