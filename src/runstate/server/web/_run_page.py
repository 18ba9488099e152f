"""One run's page: its facts, input/output/error, commands, timeline and event history.

``?partial=1`` answers the summary, the commands and the timeline only: the page's script
swaps them in (debounced) when the run's live stream delivers events, and appends the events
to the history itself. ``/runs/{run_id}/history.json`` downloads the whole history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from ...engine import RunState, project
from ...engine.lifecycle import RUN_FAILED, RUN_RETRY_SCHEDULED, RUN_TIMED_OUT, STEP_FAILED
from ...errors import RunNotFound
from ...types import RunEventPersisted, RunMetadata
from ...wire.values import dumps, metadata_json, persisted_json
from .._context import ServerContext
from ._actions import command_buttons
from ._html import (
    Markup,
    between,
    compact_json,
    fmt_duration,
    fmt_time,
    iso_time,
    join,
    pretty_json,
    render,
    run_href,
    version_text,
)
from ._layout import html_response, page
from ._runs_page import status_badge
from ._timeline import build_timeline, event_time, render_timeline
from ._ui import View

READ_PAGE = 1000
MAX_ROWS = 2000
#: Event types the "failures only" filter keeps (besides any event whose payload has an error).
FAILURE_TYPES = frozenset({STEP_FAILED, RUN_FAILED, RUN_TIMED_OUT, RUN_RETRY_SCHEDULED})


async def load_run(ctx: ServerContext, run_id: str) -> tuple[RunMetadata, list[RunEventPersisted]]:
    """The run's metadata and its whole history, read a page at a time."""
    store = ctx.store
    metadata = await store.get_run_metadata_by_run_id(run_id)
    if metadata is None:
        raise RunNotFound(run_id)
    events: list[RunEventPersisted] = []
    while True:
        after = events[-1].seq if events else 0
        chunk = await store.list_events(run_id, after_seq=after, limit=READ_PAGE)
        events.extend(chunk)
        if len(chunk) < READ_PAGE:
            return metadata, events


def is_failure(event: RunEventPersisted) -> bool:
    """Whether the "failures only" filter keeps an event."""
    return event.type in FAILURE_TYPES or event.payload.get("error") is not None


def _fact(name: str, value: object, css: str = "") -> Markup:
    return render('<div class="fact $c"><dt>$n</dt><dd>$v</dd></div>', n=name, v=value, c=css)


def _summary(state: RunState, metadata: RunMetadata, now: datetime) -> Markup:
    end = state.finished_at or (now if state.started_at else None)
    version = version_text(state.workflow_version)
    parent = (
        render(
            '<a class="mono" href="$h">$p</a>',
            h=run_href(state.parent_run_id),
            p=state.parent_run_id,
        )
        if state.parent_run_id
        else "—"
    )
    labels = join(
        render('<span class="tag">$k=$v</span>', k=k, v=v) for k, v in sorted(state.labels.items())
    )
    facts = [
        _fact("Status", status_badge(state.status.value)),
        _fact("Workflow", f"{state.workflow}{version}"),
        _fact("Tenant", state.tenant_id or "—"),
        _fact("Attempt", state.attempt),
        _fact("Created", fmt_time(state.created_at)),
        _fact("Started", fmt_time(state.started_at) or "—"),
        _fact("Finished", fmt_time(state.finished_at) or "—"),
        _fact("Duration", fmt_duration(between(state.started_at, end)) or "—"),
        _fact("Steps", f"{state.steps_succeeded} ok · {state.steps_failed} failed"),
        _fact("Last seq", state.last_seq),
        _fact("Parent", parent),
        _fact("Labels", labels or "—"),
    ]
    return render(
        '<dl class="facts" id="facts" data-status="$s">$f</dl>', s=state.status.value, f=join(facts)
    )


def _json_block(title: str, value: object, *, open_: bool = False, css: str = "") -> Markup:
    if value is None:
        return render(
            '<div class="json none $c"><span class="t">$t</span>'
            '<span class="muted">none</span></div>',
            t=title,
            c=css,
        )
    return render(
        '<details class="json $c"$o><summary>$t</summary><pre>$v</pre></details>',
        t=title,
        v=pretty_json(value),
        o=Markup(" open") if open_ else "",
        c=css,
    )


def _history_row(event: RunEventPersisted) -> Markup:
    payload = dict(event.payload)
    return render(
        '<tr data-type="$type" data-failure="$f" data-seq="$seq"><td class="num">$seq</td>'
        '<td><time datetime="$iso">$at</time></td><td><span class="etype $fc">$type</span></td>'
        '<td class="payload"><details><summary class="mono">$short</summary><pre>$full</pre>'
        "</details></td></tr>",
        type=event.type,
        f="1" if is_failure(event) else "0",
        fc="fail" if is_failure(event) else "",
        seq=event.seq,
        iso=iso_time(event_time(event)),
        at=fmt_time(event_time(event)),
        short=compact_json(payload) if payload else "{}",
        full=pretty_json({**persisted_json(event), "payload": payload}),
    )


def _history(run_id: str, events: Sequence[RunEventPersisted]) -> Markup:
    shown = events[-MAX_ROWS:]
    types = sorted({e.type for e in events})
    options = join(render('<option value="$t">$t</option>', t=t) for t in types)
    cut = (
        render(
            '<p class="muted">Showing the last $n of $m events; the download has them all.</p>',
            n=len(shown),
            m=len(events),
        )
        if len(shown) < len(events)
        else ""
    )
    return render(
        '<section class="panel" id="history" data-stream="$stream" data-after="$after">'
        '<div class="panel-head"><h2>Event history</h2><span class="muted"'
        ' id="event-count">$count events</span>'
        '<div class="tools"><label>Type <select id="type-filter"><option value="">all types'
        "</option>$options</select></label>"
        '<label class="check"><input type="checkbox" id="failures-only"> Failures only</label>'
        '<a class="button" href="$download" download>Download JSON</a></div></div>$cut'
        '<div class="table-wrap"><table class="events"><thead><tr><th class="num">Seq</th>'
        "<th>Time (UTC)</th><th>Type</th><th>Payload</th></tr></thead>"
        '<tbody id="event-rows">$rows</tbody></table></div></section>',
        stream=run_href(run_id, "/stream"),
        after=events[-1].seq if events else 0,
        count=len(events),
        options=options,
        download=run_href(run_id, "/history.json"),
        cut=cut,
        rows=join(_history_row(e) for e in shown),
    )


def _live_parts(
    ctx: ServerContext, metadata: RunMetadata, events: list[RunEventPersisted], view: View
) -> tuple[Markup, RunState]:
    state = project(metadata, events, upcasters=ctx.engine.upcasters)
    now = datetime.now(UTC)
    timeline = build_timeline(metadata, events, ctx.engine.upcasters, now)
    parts = render(
        '<div id="live-parts">$facts$commands$timeline</div>',
        facts=_summary(state, metadata, now),
        commands=command_buttons(metadata.run_id, state.status, view.session),
        timeline=render_timeline(timeline),
    )
    return parts, state


async def run_page(
    ctx: ServerContext, request: Request, path: dict[str, str], view: View
) -> Response:
    """GET /runs/{run_id}: the run's page (``?partial=1``: facts, commands and timeline)."""
    run_id = path["run_id"]
    metadata, events = await load_run(ctx, run_id)
    parts, state = _live_parts(ctx, metadata, events, view)
    if request.query_params.get("partial"):
        return html_response(parts)
    done = request.query_params.get("done")
    failed = request.query_params.get("refused")
    notice = render('<p class="notice" role="status">Sent: $d</p>', d=done) if done else ""
    if failed:
        notice = render('<p class="form-error" role="alert">Refused: $f</p>', f=failed)
    # A run that recovered keeps its last error: shown as such, not as the run's outcome.
    error_title = "Error" if state.error is not None or state.last_error is None else "Last error"
    error = state.error if state.error is not None else state.last_error
    data = join(
        [
            _json_block("Input", metadata.input, open_=True),
            _json_block("Output", state.output, open_=True),
            _json_block(error_title, error, open_=True, css="err"),
        ]
    )
    body = render(
        '<div class="page-head"><a class="back" href="/">← Runs</a><h1 class="mono">$id</h1>'
        '<span class="live" id="live">live</span></div>$notice'
        '<section class="panel run-head">$parts<div class="data">$data</div></section>$history',
        id=run_id,
        notice=notice,
        parts=parts,
        data=data,
        history=_history(run_id, events),
    )
    return page(run_id, body, page_name="run", session=view.session, signed_in=view.signed_in)


async def history_download(
    ctx: ServerContext, request: Request, path: dict[str, str], view: View
) -> Response:
    """GET /runs/{run_id}/history.json: the metadata and every event, as a JSON download."""
    metadata, events = await load_run(ctx, path["run_id"])
    document = {"metadata": metadata_json(metadata), "events": [persisted_json(e) for e in events]}
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in metadata.run_id)[:100]
    return Response(
        dumps(document),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{safe}-history.json"'},
    )
