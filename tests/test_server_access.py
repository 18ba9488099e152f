"""Every access rule of the HTTP API: scopes, missing and wrong tokens, loopback-only mode,
and tokens kept out of logs, responses, errors and the command line's output."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _http_server import serving, store_url_of
from runstate import open_store
from runstate.adapters.http import AccessDenied
from runstate.errors import InvalidInput
from runstate.server import ServerThread, load_tokens, parse_token_lines
from runstate.testing.contract import bootstrap_input

READ, WRITE, ADMIN = "read-token-0123456789", "write-token-0123456789", "admin-token-0123456789"
TOKEN_LINES = [f"read {READ}", f"write {WRITE}  # the engine", "", "# comment", f"admin {ADMIN}"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    """A server on SQLite that needs tokens, logging every request."""
    tokens = parse_token_lines(TOKEN_LINES, "test")
    with serving(f"sqlite:///{tmp_path / 'a.db'}", tokens=tokens, access_log=True) as running:
        yield running


def _bootstrap_body() -> dict[str, object]:
    return {
        "metadata": {"run_id": f"run-{uuid.uuid4().hex}", "workflow": "wf"},
        "first_events": [{"type": "RunQueued"}],
    }


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_token_is_401_with_a_bearer_challenge(server: ServerThread) -> None:
    response = httpx.get(f"{server.url}/v1/runs")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize(
    "authorization",
    ["Bearer wrong-token", f"Basic {READ}", "Bearer", f"Bearer {READ}x", f"Bearer {READ[:-1]}"],
)
def test_wrong_tokens_are_401(server: ServerThread, authorization: str) -> None:
    response = httpx.get(f"{server.url}/v1/outbox", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert READ not in response.text


def test_read_token_reads_but_cannot_write(server: ServerThread) -> None:
    assert httpx.get(f"{server.url}/v1/runs", headers=_auth(READ)).status_code == 200
    response = httpx.post(f"{server.url}/v1/runs", json=_bootstrap_body(), headers=_auth(READ))
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN"
    assert "write" in response.json()["detail"]


def test_write_token_writes_but_cannot_administer(server: ServerThread) -> None:
    body = _bootstrap_body()
    created = httpx.post(f"{server.url}/v1/runs", json=body, headers=_auth(WRITE))
    assert created.status_code == 201
    claim = {"owner": "o", "limit": 1, "lease_seconds": 1}
    refused = httpx.post(f"{server.url}/v1/outbox/claim", json=claim, headers=_auth(WRITE))
    assert refused.status_code == 403
    for path in ("/v1/outbox/redrive", "/v1/outbox/purge"):
        assert httpx.post(f"{server.url}{path}", json={}, headers=_auth(WRITE)).status_code == 403
    allowed = httpx.post(f"{server.url}/v1/outbox/claim", json=claim, headers=_auth(ADMIN))
    assert allowed.status_code == 200


def test_a_refused_write_writes_nothing(server: ServerThread) -> None:
    body = _bootstrap_body()
    httpx.post(f"{server.url}/v1/runs", json=body, headers=_auth(READ))
    run_id = body["metadata"]["run_id"]  # type: ignore[index]
    response = httpx.get(f"{server.url}/v1/runs/{run_id}", headers=_auth(ADMIN))
    assert response.status_code == 404


def test_health_and_openapi_are_public_metrics_need_read(server: ServerThread) -> None:
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    metrics = httpx.get(f"{server.url}/metrics", headers=_auth(READ))
    assert metrics.status_code == 200
    assert "runstate_http_requests_total" in metrics.text


async def test_adapter_raises_access_denied_without_leaking_the_token(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNSTATE_API_TOKEN", raising=False)
    async with open_store(store_url_of(server), token="not-the-token-123") as store:
        with pytest.raises(AccessDenied) as unknown:
            await store.get_run_metadata_by_run_id("r")
    assert unknown.value.code == "UNAUTHORIZED"
    assert "not-the-token-123" not in str(unknown.value)
    assert isinstance(unknown.value, InvalidInput)
    monkeypatch.setenv("RUNSTATE_API_TOKEN", READ)
    async with open_store(store_url_of(server)) as store:
        assert await store.get_run_metadata_by_run_id("r") is None
        with pytest.raises(AccessDenied) as scope:
            await store.bootstrap_run_tx(bootstrap_input(f"run-{uuid.uuid4().hex}"))
        assert scope.value.code == "FORBIDDEN"
        assert READ not in repr(store) + str(scope.value)


def test_tokens_never_reach_the_logs(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for token in (READ, WRITE, ADMIN, "guessed-token-abcdef"):
        httpx.get(f"{server.url}/v1/runs", headers=_auth(token))
        httpx.post(f"{server.url}/v1/runs", json=_bootstrap_body(), headers=_auth(token))
        httpx.post(f"{server.url}/v1/runs", content=b"{bad json", headers=_auth(token))
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert '"GET /v1/runs HTTP/1.1" 200' in logged  # the access log did run
    for token in (READ, WRITE, ADMIN, "guessed-token-abcdef"):
        assert token not in logged
        assert token not in caplog.text


def test_open_server_answers_loopback_hosts_only(tmp_path: Path) -> None:
    with serving(f"sqlite:///{tmp_path / 'o.db'}") as open_server:
        assert httpx.get(f"{open_server.url}/v1/runs").status_code == 200
        for host in ("localhost:8080", "[::1]:8080", "127.0.0.2"):
            assert (
                httpx.get(f"{open_server.url}/v1/runs", headers={"Host": host}).status_code == 200
            )
        # DNS rebinding: a page of evil.example resolving to 127.0.0.1 names its own host.
        rebound = httpx.get(f"{open_server.url}/v1/runs", headers={"Host": "evil.example:8080"})
        assert rebound.status_code == 403
        document = httpx.get(f"{open_server.url}/openapi.json").json()
        assert "securitySchemes" not in document["components"]


def test_token_files_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens"
    path.write_text("\n".join(TOKEN_LINES), encoding="utf-8")
    assert [t.scope.name for t in load_tokens(str(path))] == ["READ", "WRITE", "ADMIN"]
    monkeypatch.setenv("RUNSTATE_API_TOKENS", f"admin {ADMIN}\n")
    (only,) = load_tokens(None)
    assert only.scope.name == "ADMIN"
    assert ADMIN not in repr(only)
    for bad in ([f"root {ADMIN}"], [ADMIN], [f"read {READ}", f"write {READ}"]):
        with pytest.raises(InvalidInput) as caught:
            parse_token_lines(bad, "tokens.txt")
        assert "tokens.txt line" in str(caught.value)
        assert ADMIN not in str(caught.value)
        assert READ not in str(caught.value)
    with pytest.raises(InvalidInput, match="cannot read tokens file"):
        load_tokens(str(tmp_path / "missing"))


def _runstate(*args: str, env_tokens: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    if env_tokens is not None:
        env["RUNSTATE_API_TOKENS"] = env_tokens
    return subprocess.run(
        [sys.executable, "-m", "runstate.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_non_loopback_bind_without_tokens_is_refused(host: str, tmp_path: Path) -> None:
    result = _runstate("serve", "--url", f"sqlite:///{tmp_path / 'x.db'}", "--host", host)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "without tokens" in lines[0]


def test_bad_token_file_is_one_line_without_the_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"superuser {ADMIN}\n", encoding="utf-8")
    result = _runstate("serve", "--url", "memory://", "--tokens", str(path), "--port", "0")
    assert result.returncode == 2
    assert ADMIN not in result.stderr + result.stdout
    assert "unknown scope" in result.stderr
