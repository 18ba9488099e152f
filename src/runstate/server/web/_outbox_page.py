"""The outbox page: backlog, oldest pending age, delivered, dead letters, and re-drive.

Re-drive is an admin operation in the API (``POST /v1/outbox/redrive``), so its buttons show
for admin sessions only: the view never lets a token do more than it could through the API.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...types import DeadLetter
from .._context import ServerContext
from .._http import Problem
from ._html import (
    Markup,
    between,
    fmt_duration,
    fmt_time,
    href,
    join,
    render,
    run_href,
)
from ._layout import csrf_field, page
from ._session import Session
from ._ui import View

DEAD_PAGE = 100


def _card(name: str, value: object, css: str = "") -> Markup:
    return render(
        '<div class="card $c"><div class="v">$v</div><div class="k">$n</div></div>',
        n=name,
        v=value,
        c=css,
    )


def _redrive_form(session: Session, run_id: str | None, label: str) -> Markup:
    if not session.can_admin:
        return Markup("")
    run_field = render('<input type="hidden" name="run_id" value="$r">', r=run_id) if run_id else ""
    return render(
        '<form method="post" action="/outbox/redrive" class="inline">$csrf$run'
        '<button type="submit" class="cmd$all" data-redrive="$which">$label</button></form>',
        csrf=csrf_field(session),
        run=run_field,
        all=" primary" if run_id is None else "",
        which="all" if run_id is None else "run",
        label=label,
    )


def _dead_row(dead: DeadLetter, session: Session) -> Markup:
    event = dead.event
    return render(
        '<tr data-outbox-id="$id"><td class="num">$id</td><td class="mono"><a href="$h">$run</a>'
        "</td>"
        '<td class="num">$seq</td><td><span class="etype">$type</span></td><td>$wf</td>'
        '<td class="num">$attempts</td><td class="error-text" title="$err">$err</td><td>$dead</td>'
        "<td>$button</td></tr>",
        id=dead.outbox_id,
        h=run_href(event.run_id),
        run=event.run_id,
        seq=event.seq,
        type=event.type,
        wf=dead.workflow,
        attempts=dead.attempts,
        err=dead.last_error or "",
        dead=fmt_time(dead.dead_at),
        button=_redrive_form(session, event.run_id, "Re-drive run"),
    )


async def outbox_page(
    ctx: ServerContext, request: Request, _: dict[str, str], view: View
) -> Response:
    """GET /outbox: outbox status and the dead letters."""
    outbox = ctx.outbox
    stats = await outbox.outbox_stats()
    after_text = request.query_params.get("after", "")
    after = int(after_text) if after_text.isdigit() and len(after_text) < 19 else None
    dead = await outbox.list_dead_letters(limit=DEAD_PAGE + 1, after_outbox_id=after)
    more = len(dead) > DEAD_PAGE
    dead = dead[:DEAD_PAGE]
    now = datetime.now(UTC)
    age = fmt_duration(between(stats.oldest_pending_at, now)) if stats.oldest_pending_at else "—"
    cards = join(
        [
            _card("Backlog (pending)", f"{stats.pending:,}"),
            _card("In flight", f"{stats.in_flight:,}"),
            _card("Oldest pending", age),
            _card("Delivered", f"{stats.delivered:,}"),
            _card("Dead letters", f"{stats.dead:,}", "bad" if stats.dead else ""),
        ]
    )
    rows = join(_dead_row(d, view.session) for d in dead)
    empty = Markup('<tr class="empty"><td colspan="9">No dead letters.</td></tr>')
    nxt = (
        render(
            '<a class="button" href="$h">Next page »</a>',
            h=href("/outbox", [("after", str(dead[-1].outbox_id))]),
        )
        if more
        else ""
    )
    body = render(
        '<div class="page-head"><h1>Outbox</h1></div><div class="cards">$cards</div>'
        '<section class="panel"><div class="panel-head"><h2>Dead letters</h2>'
        '<div class="tools">$all</div></div><div class="table-wrap"><table class="dead">'
        '<thead><tr><th class="num">Outbox ID</th><th>Run</th><th class="num">Seq</th><th>Event'
        "</th>"
        '<th>Workflow</th><th class="num">Attempts</th><th>Last error</th><th>Dead since (UTC)'
        "</th><th></th>"
        '</tr></thead><tbody id="dead-rows">$rows</tbody></table></div><div class="pager">$next'
        "</div></section>",
        cards=cards,
        all=_redrive_form(view.session, None, "Re-drive all") if dead else "",
        rows=rows if dead else empty,
        next=nxt,
    )
    return page("Outbox", body, page_name="outbox", session=view.session, signed_in=view.signed_in)


async def redrive(ctx: ServerContext, request: Request, _: dict[str, str], view: View) -> Response:
    """POST /outbox/redrive: make the dead letters of one run (or all) deliverable again."""
    form = await view.posted(request)
    if not view.session.can_admin:
        raise Problem("FORBIDDEN", "re-driving dead letters needs an admin token")
    run_id = form.get("run_id") or None
    await ctx.outbox.redrive_dead_letters(run_id=run_id)
    ctx.notify_write()
    return RedirectResponse("/outbox", status_code=303)
