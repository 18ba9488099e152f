"""The runs page: filters, counts per status, a sortable table, cursor paging, live refresh.

Every filter is a query parameter of ``/`` (so a filtered view is a link to share); the page
reads one page of the store's run summaries (``RunCatalog.query_runs``) and the counts per
status (``count_runs_by_status``), never the runs' events. ``?partial=1`` answers the counts
and the table only: the script swaps them in when the live feed reports new events.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from ...engine import RunStatus
from ...errors import InvalidInput
from ...types import RunFilter, RunOrder, RunSummary
from .._context import ServerContext
from ._html import (
    Markup,
    between,
    fmt_duration,
    fmt_time,
    href,
    iso_time,
    join,
    render,
    run_href,
    version_text,
)
from ._layout import html_response, page
from ._ui import View

PAGE_SIZE = 50
ORDERS: tuple[RunOrder, ...] = ("created_at", "updated_at", "workflow", "status")
_STATUSES = tuple(RunStatus)
_KEPT = ("status", "not_status", "workflow", "tenant", "label", "from", "to", "q")


def _time(params: QueryParams, name: str) -> datetime | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput("must be a date and time such as 2026-01-31T12:00", field=name) from None
    # The form's datetime-local inputs carry no zone: the page shows UTC, so they mean UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _statuses(params: QueryParams, name: str) -> frozenset[str]:
    values = {v.strip().upper() for raw in params.getlist(name) for v in raw.split(",")}
    values.discard("")
    unknown = values - {s.value for s in _STATUSES}
    if unknown:
        raise InvalidInput(f"unknown status {sorted(unknown)[0][:40]!r}", field=name)
    return frozenset(values)


def _labels(params: QueryParams) -> dict[str, str]:
    labels: dict[str, str] = {}
    for raw in params.getlist("label"):
        for item in raw.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise InvalidInput("must be key=value", field="label")
            labels[key.strip()] = value.strip()
    return labels


def parse_filter(params: QueryParams) -> RunFilter:
    """The run filter a query string asks for (empty fields mean no condition)."""
    return RunFilter(
        statuses=_statuses(params, "status"),
        exclude_statuses=_statuses(params, "not_status"),
        workflow=params.get("workflow", "").strip() or None,
        tenant_id=params.get("tenant", "").strip() or None,
        labels=_labels(params),
        created_after=_time(params, "from"),
        created_before=_time(params, "to"),
        run_id_prefix=params.get("q", "").strip() or None,
    )


def _order(params: QueryParams) -> tuple[RunOrder, bool]:
    sort = params.get("sort", "created_at")
    order = next((o for o in ORDERS if o == sort), None)
    if order is None:
        raise InvalidInput(f"must be one of {', '.join(ORDERS)}", field="sort")
    return order, params.get("dir", "desc") != "asc"


def _kept(params: QueryParams, *, drop: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    names = [n for n in (*_KEPT, "sort", "dir") if n not in drop]
    return [(n, v) for n in names for v in params.getlist(n) if v != ""]


def _counts_html(params: QueryParams, counts: dict[str, int]) -> Markup:
    base = _kept(params, drop=("status", "not_status"))
    total = sum(counts.values())
    chips = [
        render(
            '<a class="chip all$on" href="$h"><span>All</span><b>$n</b></a>',
            h=href("/", base),
            n=f"{total:,}",
            on=" on" if not params.getlist("status") and not params.getlist("not_status") else "",
        )
    ]
    chosen = _statuses(params, "status")
    for status in _STATUSES:
        chips.append(
            render(
                '<a class="chip st-$s$on" href="$h" data-status="$s"><span>$label</span><b>$n</b>'
                "</a>",
                s=status.value,
                label=status.value.replace("_", " ").lower(),
                n=f"{counts.get(status.value, 0):,}",
                h=href("/", [*base, ("status", status.value)]),
                on=" on" if chosen == {status.value} else "",
            )
        )
    return render('<div class="chips" id="counts">$c</div>', c=join(chips))


def _sort_header(params: QueryParams, order: RunOrder, label: str) -> Markup:
    current, descending = _order(params)
    base = _kept(params, drop=("sort", "dir"))
    flip = "asc" if current == order and descending else "desc"
    arrow = ("▼" if descending else "▲") if current == order else ""
    return render(
        '<th class="sortable$on"><a href="$h">$label<span class="arrow">$a</span></a></th>',
        h=href("/", [*base, ("sort", order), ("dir", flip)]),
        label=label,
        a=arrow,
        on=" on" if current == order else "",
    )


def status_badge(status: str) -> Markup:
    """A coloured status label."""
    return render('<span class="badge st-$s">$t</span>', s=status, t=status.replace("_", " "))


def _labels_html(labels: dict[str, str]) -> Markup:
    return join(
        render('<span class="tag">$k=$v</span>', k=k, v=v) for k, v in sorted(labels.items())
    )


def _row(run: RunSummary, now: datetime) -> Markup:
    meta = run.metadata
    end = run.finished_at or (now if run.started_at else None)
    version = version_text(meta.workflow_version)
    return render(
        '<tr data-run-id="$id" data-status="$status"><td class="mono"><a href="$h">$id</a></td>'
        '<td>$badge</td><td>$wf<span class="muted">$ver</span></td><td>$tenant</td>'
        '<td class="num">$attempt</td><td><time datetime="$ciso">$created</time></td>'
        '<td class="num">$dur</td><td><time datetime="$uiso">$updated</time></td>'
        '<td class="num">$seq</td><td class="labels">$labels</td></tr>',
        id=meta.run_id,
        h=run_href(meta.run_id),
        status=run.status,
        badge=status_badge(run.status),
        wf=meta.workflow,
        ver=version,
        tenant=meta.tenant_id or "",
        attempt=run.attempt,
        ciso=iso_time(meta.created_at),
        created=fmt_time(meta.created_at),
        dur=fmt_duration(between(run.started_at, end)),
        uiso=iso_time(run.updated_at),
        updated=fmt_time(run.updated_at),
        seq=run.last_seq,
        labels=_labels_html(dict(meta.labels)),
    )


async def _results(ctx: ServerContext, params: QueryParams) -> Markup:
    """The counts, the table and the pager for a query string."""
    run_filter = parse_filter(params)
    order, descending = _order(params)
    catalog = ctx.catalog
    cursor = params.get("cursor") or None
    listing = await catalog.query_runs(
        run_filter, order_by=order, descending=descending, limit=PAGE_SIZE, cursor=cursor
    )
    counts = dict(await catalog.count_runs_by_status(run_filter))
    now = datetime.now(UTC)
    rows = [_row(run, now) for run in listing.runs]
    empty = '<tr class="empty"><td colspan="10">No runs match these filters.</td></tr>'
    heads = join(
        [
            Markup("<th>Run ID</th>"),
            _sort_header(params, "status", "Status"),
            _sort_header(params, "workflow", "Workflow"),
            Markup('<th>Tenant</th><th class="num">Attempt</th>'),
            _sort_header(params, "created_at", "Created (UTC)"),
            Markup('<th class="num">Duration</th>'),
            _sort_header(params, "updated_at", "Updated (UTC)"),
            Markup('<th class="num">Seq</th><th>Labels</th>'),
        ]
    )
    pager = _pager(params, listing.next_cursor, cursor is not None, len(rows))
    return render(
        '<div id="results">$counts<div class="table-wrap"><table class="runs">'
        "<thead><tr>$heads</tr></thead><tbody>$rows</tbody></table></div>$pager</div>",
        counts=_counts_html(params, counts),
        heads=heads,
        rows=join(rows) if rows else Markup(empty),
        pager=pager,
    )


def _pager(params: QueryParams, next_cursor: str | None, paged: bool, shown: int) -> Markup:
    base = _kept(params)
    first = render('<a class="button" href="$h">« Newest</a>', h=href("/", base)) if paged else ""
    nxt = (
        render(
            '<a class="button" id="next-page" href="$h">Next page »</a>',
            h=href("/", [*base, ("cursor", next_cursor)]),
        )
        if next_cursor
        else ""
    )
    return render(
        '<div class="pager"><span class="muted">$n runs on this page</span>$first$next</div>',
        n=shown,
        first=first,
        next=nxt,
    )


def _status_picker(params: QueryParams, name: str, title: str) -> Markup:
    try:
        chosen = _statuses(params, name)
    except InvalidInput:
        chosen = frozenset()
    boxes = join(
        render(
            '<label class="check"><input type="checkbox" name="$n" value="$s"$c>$badge</label>',
            n=name,
            s=s.value,
            c=Markup(" checked") if s.value in chosen else "",
            badge=status_badge(s.value),
        )
        for s in _STATUSES
    )
    shown = ", ".join(sorted(chosen)).replace("_", " ").lower() or (
        "none" if name == "not_status" else "any"
    )
    return render(
        '<details class="dropdown" data-name="$n"><summary>$title: <b>$shown</b></summary>'
        '<div class="menu">$boxes</div></details>',
        n=name,
        title=title,
        shown=shown,
        boxes=boxes,
    )


_FORM = """<form class="filters" method="get" action="/" id="filters">
<input type="search" name="q" value="$q" placeholder="Run ID prefix" class="grow mono"
 aria-label="Run ID prefix">
$include$exclude
<input type="text" name="workflow" value="$workflow" placeholder="Workflow" aria-label="Workflow">
<input type="text" name="tenant" value="$tenant" placeholder="Tenant" aria-label="Tenant">
<input type="text" name="label" value="$label" placeholder="label key=value" aria-label="Label">
<label class="range">from <input type="datetime-local" step="1" name="from" value="$from_"
 aria-label="Created from (UTC)"></label>
<label class="range">to <input type="datetime-local" step="1" name="to" value="$to"
 aria-label="Created before (UTC)"></label>
<input type="hidden" name="sort" value="$sort"><input type="hidden" name="dir" value="$dir">
<button type="submit" class="primary">Apply</button><a class="button" href="/">Clear</a>
</form>"""


def _local(text: str) -> str:
    """A time parameter as a datetime-local input shows it (UTC, no zone)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="seconds")


def _form(params: QueryParams) -> Markup:
    return render(
        _FORM,
        q=params.get("q", ""),
        include=_status_picker(params, "status", "Status"),
        exclude=_status_picker(params, "not_status", "Exclude"),
        workflow=params.get("workflow", ""),
        tenant=params.get("tenant", ""),
        label=", ".join(params.getlist("label")),
        from_=_local(params.get("from", "")),
        to=_local(params.get("to", "")),
        sort=params.get("sort", "created_at"),
        dir=params.get("dir", "desc"),
    )


async def runs_page(
    ctx: ServerContext, request: Request, _: dict[str, str], view: View
) -> Response:
    """GET /: the runs page (``?partial=1``: only the counts and the table, for live refresh)."""
    params = request.query_params
    try:
        results = await _results(ctx, params)
    except InvalidInput as exc:
        results = render(
            '<div id="results"><p class="form-error" role="alert">$m</p></div>', m=str(exc)
        )
    if params.get("partial"):
        return html_response(results)
    body = render(
        '<div class="page-head"><h1>Runs</h1><span class="live" id="live" title="updates as the '
        'store changes">live</span></div>$form$results',
        form=_form(params),
        results=results,
    )
    return page("Runs", body, page_name="runs", session=view.session, signed_in=view.signed_in)
