"""The web view in a real browser: Debian's Chromium driven by Playwright, over the demo's data.

One browser for the session and one server (with read, write and admin tokens) for the module;
each test gets a fresh browser context, signs in through the form, and fails if the page logged
a console error or threw.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _web import CHROMIUM, Api, Tokens, demo_server, launch_options, new_tokens, take_screenshots
from conftest import IN_CI
from runstate.server import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.slow]

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, once (the only module that drives a browser).

    Module scope, not session: Playwright's sync API keeps an event loop running in the test
    thread while it is started, which would break every asyncio test collected after this one.
    """
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (Debian: apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"{message}; CI=true: a missing tool is a failure")
        pytest.skip(message)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(**launch_options())
        yield browser
        browser.close()


@dataclass(frozen=True, kw_only=True)
class Site:
    """The server under test, its tokens and its API."""

    server: ServerThread
    tokens: Tokens
    url: str
    clients: dict[str, Api]

    @property
    def base(self) -> str:
        """The server's base URL."""
        return self.server.url

    def api(self, scope: str = "admin") -> Api:
        """The API as a token of ``scope``."""
        if scope not in self.clients:
            self.clients[scope] = Api(self.server, getattr(self.tokens, scope))
        return self.clients[scope]

    def runs(self) -> list[dict[str, Any]]:
        """Every run, as the API lists them."""
        return list(self.api("read").get("/v1/runs", limit=500)["runs"])

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """A run's events."""
        return list(self.api("read").get(f"/v1/runs/{run_id}/events")["events"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A server with tokens over a SQLite store filled by the demo."""
    folder = tmp_path_factory.mktemp("web")
    url = os.environ.get("RUNSTATE_WEB_TEST_URL") or f"sqlite:///{folder / 'demo.db'}"
    tokens = new_tokens()
    with demo_server(url, folder, tokens) as server:
        site = Site(server=server, tokens=tokens, url=url, clients={})
        yield site
        for api in site.clients.values():
            api.client.close()


class Watched:
    """A page whose console errors and uncaught exceptions are collected."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))


@pytest.fixture(scope="module")
def signed_in(chromium: Any, site: Site) -> Iterator[dict[str, Any]]:
    """One browser context per token scope, signed in once through the form."""
    contexts: dict[str, Any] = {}
    for scope in ("admin", "read"):
        context = chromium.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        sign_in(page, site, getattr(site.tokens, scope))
        page.close()
        contexts[scope] = context
    yield contexts
    for context in contexts.values():
        context.close()


def _open(context: Any, site: Site) -> Iterator[Watched]:
    watched = Watched(context.new_page())
    watched.page.goto(f"{site.base}/")
    yield watched
    watched.page.close()
    assert watched.errors == []


def sign_in(page: Any, site: Site, token: str) -> None:
    """Sign in through the form."""
    page.goto(f"{site.base}/")
    assert "/login" in page.url
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.base}/")


@pytest.fixture
def admin(signed_in: dict[str, Any], site: Site) -> Iterator[Watched]:
    """A page signed in with the admin token, on the runs page."""
    yield from _open(signed_in["admin"], site)


@pytest.fixture
def reader(signed_in: dict[str, Any], site: Site) -> Iterator[Watched]:
    """A page signed in with the read token, on the runs page."""
    yield from _open(signed_in["read"], site)


def _run_with(site: Site, *, plan: str, status: str) -> dict[str, Any]:
    for run in site.runs():
        if run["metadata"]["labels"].get("plan") == plan and run["status"] == status:
            return run
    raise AssertionError(f"the demo left no {status} run of plan {plan}")


def test_the_list_shows_the_runs_newest_first_with_counts(admin: Watched, site: Site) -> None:
    page = admin.page
    runs = site.runs()
    rows = page.locator("table.runs tbody tr[data-run-id]")
    assert rows.count() == min(len(runs), 50)
    shown = rows.evaluate_all("rows => rows.map(r => r.dataset.runId)")
    assert shown == [r["metadata"]["run_id"] for r in runs][: len(shown)]
    total = page.locator("#counts .chip.all b").inner_text().replace(",", "")
    assert int(total) == len(runs)
    failed = sum(r["status"] == "FAILED" for r in runs)
    assert page.locator("#counts .chip.st-FAILED b").inner_text() == str(failed)
    page.click("#next-page")
    assert page.locator("table.runs tbody tr[data-run-id]").count() == len(runs) - 50


def test_filters_narrow_the_list(admin: Watched, site: Site) -> None:
    page = admin.page
    runs = site.runs()
    page.click("#counts .chip.st-SUCCEEDED")
    statuses = page.locator("table.runs tbody tr").evaluate_all("r => r.map(x => x.dataset.status)")
    assert set(statuses) == {"SUCCEEDED"}
    # Exclude through the form: no SUCCEEDED and no FAILED rows are left.
    page.goto(f"{site.base}/")
    page.click("details[data-name=not_status] summary")
    page.check("details[data-name=not_status] input[value=SUCCEEDED]")
    page.check("details[data-name=not_status] input[value=FAILED]")
    page.click("form#filters button[type=submit]")
    left = page.locator("table.runs tbody tr[data-run-id]")
    expected = [r for r in runs if r["status"] not in ("SUCCEEDED", "FAILED")]
    assert left.count() == min(len(expected), 50)
    assert not {"SUCCEEDED", "FAILED"} & set(left.evaluate_all("r => r.map(x => x.dataset.status)"))
    # Workflow, tenant and a label, then a run id prefix.
    page.goto(f"{site.base}/?workflow=train&tenant=acme&label=plan%3Dfail")
    wanted = [
        r
        for r in runs
        if r["metadata"]["workflow"] == "train"
        and r["metadata"]["tenant_id"] == "acme"
        and r["metadata"]["labels"]["plan"] == "fail"
    ]
    assert page.locator("table.runs tbody tr[data-run-id]").count() == len(wanted)
    one = runs[3]["metadata"]["run_id"]
    page.goto(f"{site.base}/")
    page.fill("input[name=q]", one)
    page.click("form#filters button[type=submit]")
    assert page.locator("table.runs tbody tr[data-run-id]").evaluate_all(
        "r => r.map(x => x.dataset.runId)"
    ) == [one]


def test_sorting_by_a_column(admin: Watched, site: Site) -> None:
    page = admin.page
    page.click("th.sortable a:has-text('Workflow')")
    workflows = page.locator("table.runs tbody tr td:nth-child(3)").all_inner_texts()
    names = [w.split(" ")[0] for w in workflows]
    assert names == sorted(names, reverse=True)
    page.click("th.sortable a:has-text('Workflow')")
    names = [
        w.split(" ")[0]
        for w in page.locator("table.runs tbody tr td:nth-child(3)").all_inner_texts()
    ]
    assert names == sorted(names)


def test_the_timeline_has_one_bar_per_step_and_retries_show(admin: Watched, site: Site) -> None:
    page = admin.page
    run = _run_with(site, plan="flaky", status="SUCCEEDED")
    run_id = run["metadata"]["run_id"]
    started = [e for e in site.events(run_id) if e["type"] == "StepStarted"]
    page.goto(f"{site.base}/runs/{run_id}")
    assert page.locator("#timeline .tl-bar.step").count() == len(started)
    assert page.locator("#timeline .tl-bar.step.failed").count() >= 1
    assert page.locator("#timeline .tl-label .retry").count() >= 1  # attempt 2's steps
    assert page.locator("#timeline .tl-bar.period.st-QUEUED").count() == 2  # the retry re-queued
    width = page.locator("#tl-canvas").evaluate("c => c.getBoundingClientRect().width")
    page.click("button[data-zoom=in]")
    page.click("button[data-zoom=in]")
    zoomed = page.locator("#tl-canvas").evaluate("c => c.getBoundingClientRect().width")
    assert zoomed == pytest.approx(width * 4, rel=0.02)
    assert page.locator("#zoom-level").inner_text() == "4\u00d7"
    page.click("button[data-zoom=fit]")
    fitted = page.locator("#tl-canvas").evaluate("c => c.getBoundingClientRect().width")
    assert fitted == pytest.approx(width, rel=0.02)


def test_an_appended_event_appears_live(admin: Watched, site: Site) -> None:
    page = admin.page
    run = _run_with(site, plan="succeed", status="SUCCEEDED")
    run_id = run["metadata"]["run_id"]
    page.goto(f"{site.base}/runs/{run_id}")
    page.wait_for_selector("#live.on")
    before = page.locator("#event-rows tr").count()
    note = f"note-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    site.api("write").post(
        f"/v1/runs/{run_id}/record", {"type": "OperatorNote", "payload": {"text": note}}
    )
    page.locator(f"#event-rows tr[data-type=OperatorNote] summary:has-text('{note}')").wait_for(
        timeout=2000
    )
    assert time.monotonic() - started < 2.0
    assert page.locator("#event-rows tr").count() == before + 1


def test_new_runs_and_status_changes_appear_live_on_the_list(admin: Watched, site: Site) -> None:
    page = admin.page
    page.wait_for_selector("#live.on")
    run_id = f"live-{uuid.uuid4().hex[:8]}"
    api = site.api("write")
    api.post(f"/v1/runs/{run_id}/create", {"workflow": "ingest", "tenant_id": "acme"})
    row = page.locator(f"table.runs tr[data-run-id='{run_id}']")
    row.wait_for(timeout=2000)
    assert row.get_attribute("data-status") == "QUEUED"
    api.post(f"/v1/runs/{run_id}/start", {"worker": "test"})
    page.locator(f"table.runs tr[data-run-id='{run_id}'][data-status=RUNNING]").wait_for(
        timeout=2000
    )


def test_failures_only_filters_the_history(admin: Watched, site: Site) -> None:
    page = admin.page
    run = _run_with(site, plan="flaky", status="SUCCEEDED")
    run_id = run["metadata"]["run_id"]
    page.goto(f"{site.base}/runs/{run_id}")
    rows = page.locator("#event-rows tr")
    total = rows.count()
    page.check("#failures-only")
    visible = page.locator("#event-rows tr:visible")
    types = set(visible.evaluate_all("r => r.map(x => x.dataset.type)"))
    assert 0 < visible.count() < total
    assert types <= {"StepFailed", "RunRetryScheduled", "RunFailed", "RunTimedOut"}
    assert "StepFailed" in types
    page.uncheck("#failures-only")
    page.select_option("#type-filter", "StepStarted")
    assert set(
        page.locator("#event-rows tr:visible").evaluate_all("r => r.map(x => x.dataset.type)")
    ) == {"StepStarted"}
    with page.expect_download() as download:
        page.click("a:has-text('Download JSON')")
    saved = download.value.path()
    import json

    document = json.loads(Path(saved).read_text())
    assert document["metadata"]["run_id"] == run_id
    assert len(document["events"]) == total


def _dead_letters(site: Site) -> int:
    """Dead-letter every pending record of a new run through the relay's admin API."""
    api = site.api("admin")
    run_id = f"dead-{uuid.uuid4().hex[:8]}"
    api.post(f"/v1/runs/{run_id}/create", {"workflow": "report", "mode": "sync"})
    claimed = api.post("/v1/outbox/claim", {"owner": "t", "limit": 100, "lease_seconds": 30})
    for record in claimed["records"]:
        api.post(
            "/v1/outbox/failed",
            {"owner": "t", "outbox_id": record["outbox_id"], "error": "sink refused: 503"},
        )
    return len(claimed["records"])


def test_redrive_empties_the_dead_letters(admin: Watched, site: Site) -> None:
    page = admin.page
    dead = _dead_letters(site)
    assert dead >= 2
    page.goto(f"{site.base}/outbox")
    rows = page.locator("#dead-rows tr[data-outbox-id]")
    assert rows.count() == dead
    assert "sink refused: 503" in page.locator("#dead-rows").inner_text()
    page.click("button[data-redrive=all]")
    page.wait_for_url(f"{site.base}/outbox")
    assert page.locator("#dead-rows tr[data-outbox-id]").count() == 0
    assert site.api("read").get("/v1/outbox")["dead"] == 0


def test_commands_follow_the_transition_table(admin: Watched, site: Site) -> None:
    page = admin.page
    run_id = f"cmd-{uuid.uuid4().hex[:8]}"
    site.api("write").post(f"/v1/runs/{run_id}/create", {"workflow": "train", "mode": "sync"})
    page.goto(f"{site.base}/runs/{run_id}")
    assert page.locator("button[data-command=pause]").is_enabled()
    assert page.locator("button[data-command=resume]").is_disabled()
    assert page.locator("button[data-command=start]").is_disabled()
    page.click("button[data-command=pause]")
    page.wait_for_selector("#facts[data-status=PAUSED]")
    assert page.locator("button[data-command=resume]").is_enabled()
    assert page.locator("button[data-command=pause]").is_disabled()


def test_a_read_only_token_sees_no_command_buttons(reader: Watched, site: Site) -> None:
    page = reader.page
    run = site.runs()[0]
    page.goto(f"{site.base}/runs/{run['metadata']['run_id']}")
    page.wait_for_selector("#timeline")
    assert page.locator("button[data-command]").count() == 0
    assert page.locator("#commands").count() == 0
    page.goto(f"{site.base}/outbox")
    assert page.locator("button[data-redrive]").count() == 0


def test_signing_in_sets_a_strict_http_only_cookie_without_the_token(
    chromium: Any, site: Site
) -> None:
    context = chromium.new_context()
    page = context.new_page()
    page.goto(f"{site.base}/login")
    page.fill("input[name=token]", "not-a-token")
    page.click("button[type=submit]")
    assert page.locator(".form-error").is_visible()
    sign_in(page, site, site.tokens.write)
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert site.tokens.write not in cookie["value"]
    page.click("button:has-text('Sign out')")
    page.wait_for_url(f"{site.base}/login")
    page.goto(f"{site.base}/outbox")
    assert "/login?next=%2Foutbox" in page.url
    context.close()


def test_screenshots_of_the_demo(admin: Watched, site: Site, tmp_path: Path) -> None:
    run = _run_with(site, plan="flaky", status="SUCCEEDED")
    target = os.environ.get("RUNSTATE_SCREENSHOTS")
    folder = Path(target) if target else tmp_path
    shots = take_screenshots(admin.page, site.base, run["metadata"]["run_id"], folder)
    assert all(path.stat().st_size > 10_000 for path in shots)
