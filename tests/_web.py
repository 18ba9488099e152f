"""Helpers of the web view's tests: Debian's Chromium through Playwright, a server with demo data.

The browser is Debian's ``/usr/bin/chromium`` (never one Playwright downloads); ``.ci/run``
installs the package when it is missing. The screenshots in docs/screenshots are taken by
``take_screenshots`` here, from the data ``runstate demo`` writes (``make screenshots``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from _http_server import serving
from runstate.cli._demo import run_demo
from runstate.server import Scope, ServerThread, Token

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DEMO_RUNS = 80
DEMO_SEED = 17


@dataclass(frozen=True, kw_only=True)
class Tokens:
    """One token per scope, as the test server knows them."""

    read: str
    write: str
    admin: str

    def configured(self) -> tuple[Token, ...]:
        """The server's token table."""
        return tuple(
            Token(scope=scope, secret=secret.encode())
            for scope, secret in (
                (Scope.READ, self.read),
                (Scope.WRITE, self.write),
                (Scope.ADMIN, self.admin),
            )
        )


def new_tokens() -> Tokens:
    """Fresh random tokens."""
    return Tokens(
        read=f"r-{secrets.token_urlsafe(16)}",
        write=f"w-{secrets.token_urlsafe(16)}",
        admin=f"a-{secrets.token_urlsafe(16)}",
    )


def fill_with_demo(url: str, folder: Path) -> None:
    """Run ``runstate demo``'s driver into the store at ``url`` (its self-check must pass)."""
    sink = (folder / "demo-events.jsonl").resolve().as_uri()
    demo = run_demo(
        url=url, sink_url=sink, runs=DEMO_RUNS, workers=8, seed=DEMO_SEED, show_progress=False
    )
    # A thread of its own: Playwright's sync API keeps an event loop in the test's thread.
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(asyncio.run, demo).result()
    assert result.ok, result.problems


@contextmanager
def demo_server(url: str, folder: Path, tokens: Tokens | None) -> Iterator[ServerThread]:
    """A server over ``url`` (the demo's data written once it is up)."""
    with serving(url, tokens=tokens.configured() if tokens else ()) as server:
        fill_with_demo(url, folder)
        yield server


class Api:
    """The HTTP API of the test server, for a test to change data under the browser."""

    def __init__(self, server: ServerThread, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=server.url, headers=headers, timeout=10)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST JSON; return the decoded answer (None for 204)."""
        response = self.client.post(path, json=body if body is not None else {})
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        """GET JSON."""
        response = self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()


def launch_options() -> dict[str, Any]:
    """How the tests start Chromium."""
    return {"executable_path": str(CHROMIUM), "headless": True, "args": CHROMIUM_ARGS}


def take_screenshots(page: Any, base_url: str, run_id: str, folder: Path) -> list[Path]:
    """Screenshots of the runs page and of a run's page with its timeline, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{base_url}/")
    page.wait_for_selector("table.runs tbody tr[data-run-id]")
    runs = folder / "runs.png"
    page.screenshot(path=str(runs))
    page.goto(f"{base_url}/runs/{run_id}")
    page.wait_for_selector("#timeline .tl-bar.step")
    page.set_viewport_size({"width": 1440, "height": 1000})
    timeline = folder / "run-timeline.png"
    page.screenshot(path=str(timeline))
    return [runs, timeline]
