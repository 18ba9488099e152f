"""The web view served by ``runstate serve`` at ``/``: runs, one run's timeline, the outbox.

Server-rendered HTML with one stylesheet and one small script that ship in the package; the
session cookie model and its protections are described in docs/web-view.md.
"""

from __future__ import annotations

from .._context import ServerContext
from .._router import Operation
from ._actions import run_command
from ._outbox_page import outbox_page, redrive
from ._run_page import history_download, run_page
from ._runs_page import runs_page
from ._ui import WebUI, feed_events, run_events, web_operation


def web_operations(ctx: ServerContext) -> tuple[Operation, ...]:
    """The web view's routes over a server context (kept out of the OpenAPI document)."""
    ui = WebUI(ctx)
    return (
        web_operation("GET", "/", ui.wrap(runs_page)),
        web_operation("GET", "/login", ui.login_form),
        web_operation("POST", "/login", ui.login),
        web_operation("POST", "/logout", ui.wrap(ui.logout)),
        web_operation("GET", "/static/{name}", ui.static),
        web_operation("GET", "/ui/feed", ui.wrap(feed_events, data=True)),
        web_operation("GET", "/runs/{run_id}", ui.wrap(run_page)),
        web_operation("GET", "/runs/{run_id}/stream", ui.wrap(run_events, data=True)),
        web_operation("GET", "/runs/{run_id}/history.json", ui.wrap(history_download, data=True)),
        web_operation("POST", "/runs/{run_id}/commands/{command}", ui.wrap(run_command)),
        web_operation("GET", "/outbox", ui.wrap(outbox_page)),
        web_operation("POST", "/outbox/redrive", ui.wrap(redrive)),
    )


__all__ = ["web_operations"]
