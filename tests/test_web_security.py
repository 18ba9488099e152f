"""The web view's security model over plain HTTP: sessions, CSRF, escaping, headers, scopes.

These need no browser: each check is one request and its answer (docs/web-view.md explains
the model they hold to).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser

import httpx
import pytest

from _http_server import serving
from _web import Tokens, new_tokens
from runstate.server import ServerThread
from runstate.server.web._layout import CSP
from runstate.server.web._ui import safe_next

EVIL = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    """The module server's tokens."""
    return new_tokens()


@pytest.fixture(scope="module")
def server(tokens: Tokens) -> Iterator[ServerThread]:
    """A server with tokens over a private in-memory store."""
    with serving(f"memory://websec-{uuid.uuid4().hex[:8]}", tokens=tokens.configured()) as s:
        yield s


def _client(server: ServerThread) -> httpx.Client:
    return httpx.Client(base_url=server.url, follow_redirects=False, timeout=10)


@contextmanager
def _signed_in(server: ServerThread, token: str) -> Iterator[httpx.Client]:
    with _client(server) as client:
        answer = client.post("/login", data={"token": token, "next": "/"})
        assert answer.status_code == 303, answer.text
        yield client


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _create(server: ServerThread, tokens: Tokens, run_id: str, **body: object) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as api:
        answer = api.post(
            f"/v1/runs/{run_id}/create",
            json={"workflow": "wf", **body},
            headers={"Authorization": f"Bearer {tokens.write}"},
        )
        assert answer.status_code == 201, answer.text


class _Markup(HTMLParser):
    """Collects what a strict CSP would refuse: inline scripts, inline styles, on* handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.refused.append("inline <script>")
        self.refused += [f"{tag} {name}" for name in names if name == "style" or name[:2] == "on"]


def test_pages_need_a_session_and_data_routes_answer_401(server: ServerThread) -> None:
    with _client(server) as client:
        answer = client.get("/outbox?after=3")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login?next=%2Foutbox%3Fafter%3D3"
        assert client.get("/ui/feed").status_code == 401
        assert client.get("/runs/x/history.json").status_code == 401
        login = client.get("/login")
        assert login.status_code == 200
        assert 'type="password"' in login.text
        assert 'name="token"' in login.text


def test_a_wrong_token_gets_no_session(server: ServerThread) -> None:
    with _client(server) as client:
        answer = client.post("/login", data={"token": "nope"})
        assert answer.status_code == 401
        assert "set-cookie" not in answer.headers
        assert "not valid" in answer.text


def test_the_session_cookie_is_strict_http_only_and_not_the_token(
    server: ServerThread, tokens: Tokens
) -> None:
    with _client(server) as client:
        answer = client.post("/login", data={"token": tokens.read, "next": "//evil.example/"})
        assert answer.headers["location"] == "/"  # never sent to another site
        cookie = answer.headers["set-cookie"]
        for attribute in ("HttpOnly", "SameSite=Strict", "Path=/"):
            assert attribute in cookie
        assert tokens.read not in cookie
        page = client.get("/")
        assert page.status_code == 200
        assert "read access" in page.text
        client.post("/logout", data={"csrf": _csrf(page.text)})
        assert client.get("/").status_code == 303  # the session ended on the server


def test_every_page_carries_a_strict_csp_and_no_inline_code(
    server: ServerThread, tokens: Tokens
) -> None:
    run_id = f"esc-{uuid.uuid4().hex[:6]}"
    _create(server, tokens, run_id, tenant_id=EVIL, labels={"k": '"><b>x'}, input={"x": EVIL})
    with _signed_in(server, tokens.admin) as client:
        for path in ("/", f"/runs/{run_id}", "/outbox", f"/?q={EVIL}", f"/?tenant={EVIL}"):
            answer = client.get(path)
            assert answer.status_code == 200, path
            assert answer.headers["content-security-policy"] == CSP
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert EVIL not in answer.text, path
            assert '"><b>x' not in answer.text
            parser = _Markup()
            parser.feed(answer.text)
            assert parser.refused == [], path
        page = client.get(f"/runs/{run_id}").text
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_state_changing_forms_need_the_csrf_token_and_the_same_origin(
    server: ServerThread, tokens: Tokens
) -> None:
    run_id = f"csrf-{uuid.uuid4().hex[:6]}"
    _create(server, tokens, run_id, mode="sync")
    action = f"/runs/{run_id}/commands/pause"
    with _signed_in(server, tokens.write) as client:
        csrf = _csrf(client.get(f"/runs/{run_id}").text)
        assert client.post(action, data={"nonce": "n" * 12}).status_code == 403
        assert client.post(action, data={"nonce": "n" * 12, "csrf": "x" + csrf}).status_code == 403
        cross = {"Origin": "http://evil.example"}
        refused = client.post(action, data={"csrf": csrf, "nonce": "n" * 12}, headers=cross)
        assert refused.status_code == 403
        site = {"Sec-Fetch-Site": "cross-site"}
        refused = client.post(action, data={"csrf": csrf, "nonce": "n" * 12}, headers=site)
        assert refused.status_code == 403
        assert 'data-status="RUNNING"' in client.get(f"/runs/{run_id}").text
        done = client.post(
            action, data={"csrf": csrf, "nonce": "n" * 12}, headers={"Origin": server.url}
        )
        assert done.status_code == 303
        assert 'data-status="PAUSED"' in client.get(f"/runs/{run_id}").text
        # The same form posted again (same nonce) is the same command: nothing is appended.
        events = client.get(f"/runs/{run_id}/history.json").json()["events"]
        client.post(action, data={"csrf": csrf, "nonce": "n" * 12})
        assert len(client.get(f"/runs/{run_id}/history.json").json()["events"]) == len(events)


def test_sessions_get_no_more_than_their_token(server: ServerThread, tokens: Tokens) -> None:
    run_id = f"scope-{uuid.uuid4().hex[:6]}"
    _create(server, tokens, run_id, mode="sync")
    with _signed_in(server, tokens.read) as reader:
        page = reader.get(f"/runs/{run_id}").text
        assert "data-command" not in page
        answer = reader.post(
            f"/runs/{run_id}/commands/pause", data={"csrf": _csrf(page), "nonce": "m" * 12}
        )
        assert answer.status_code == 403
    with _signed_in(server, tokens.write) as writer:
        outbox = writer.get("/outbox").text
        assert "data-redrive" not in outbox  # re-drive is an admin operation, as in the API
        answer = writer.post("/outbox/redrive", data={"csrf": _csrf(outbox)})
        assert answer.status_code == 403


def test_the_web_routes_stay_out_of_the_openapi_document(server: ServerThread) -> None:
    with _client(server) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert not [
        path
        for path in paths
        if not path.startswith(("/v1/", "/healthz", "/readyz", "/metrics", "/openapi.json"))
    ]


def test_assets_ship_in_the_package_with_etags(server: ServerThread) -> None:
    with _client(server) as client:
        for name, media in (("app.css", "text/css"), ("app.js", "text/javascript")):
            answer = client.get(f"/static/{name}")
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith(media)
            again = client.get(f"/static/{name}", headers={"If-None-Match": answer.headers["etag"]})
            assert again.status_code == 304
        assert client.get("/static/../_ui.py").status_code == 404
        assert client.get("/static/nothing.js").status_code == 404


def test_next_is_always_a_local_path() -> None:
    assert safe_next("/runs/a?b=1") == "/runs/a?b=1"
    for bad in ("//evil.example", "https://evil.example/", "/\\evil", "", None, "runs"):
        assert safe_next(bad) == "/"


def test_without_tokens_loopback_needs_no_sign_in_but_other_hosts_are_refused() -> None:
    with serving(f"memory://webopen-{uuid.uuid4().hex[:8]}") as server, _client(server) as client:
        answer = client.get("/")
        assert answer.status_code == 200
        assert "no sign-in" in answer.text
        assert "HttpOnly" in answer.headers["set-cookie"]
        assert client.get("/", headers={"Host": "evil.example"}).status_code == 403
        assert client.get("/login").status_code == 303
        # Even without tokens a form needs the CSRF token: another site cannot post one.
        assert client.post("/outbox/redrive", data={}).status_code == 403
        created = client.post("/v1/runs/open-1/create", json={"workflow": "wf"})
        assert created.status_code == 201
        csrf = _csrf(client.get("/runs/open-1").text)
        assert client.post("/outbox/redrive", data={"csrf": csrf}).status_code == 303


def test_a_command_the_table_forbids_comes_back_refused(
    server: ServerThread, tokens: Tokens
) -> None:
    run_id = f"stale-{uuid.uuid4().hex[:6]}"
    _create(server, tokens, run_id, mode="sync")
    with _signed_in(server, tokens.write) as client:
        page = client.get(f"/runs/{run_id}").text
        assert re.search(r'data-command="resume" disabled', page)
        answer = client.post(
            f"/runs/{run_id}/commands/resume", data={"csrf": _csrf(page), "nonce": "s" * 12}
        )
        assert answer.status_code == 303
        shown = client.get(answer.headers["location"]).text
        assert "Refused: Resume" in shown
        assert 'data-status="RUNNING"' in shown
