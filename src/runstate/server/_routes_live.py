"""Live routes: the store-wide feed and one run's events as Server-Sent Events.

The feed stream's ``id`` is the commit-safe feed cursor (``RunCatalog.read_feed``), set on the
last event of each page: a client that reconnects with ``Last-Event-ID`` resumes after the last
page it saw whole, so it may see a page's first events twice but never misses one. A run's
stream uses the event's seq as its ``id``: seqs of one run commit in order, without gaps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..errors import InvalidInput, RunNotFound, RunStateError
from ..types import RunEventPersisted
from ..wire.problems import error_fields, problem_document
from ..wire.values import dumps, persisted_json
from ._auth import Scope
from ._context import FeedWaker, ServerContext, log
from ._http import query_params, str_param
from ._router import Operation, Param

STREAM_PAGE = 200
EVENT_STREAM = "text/event-stream"
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# One read of the store: returns the events after the position and the new position.
Reader = Callable[[str | None], Awaitable[tuple[list[RunEventPersisted], str | None]]]


def _frame(event: RunEventPersisted, event_id: str | None) -> bytes:
    head = f"id: {event_id}\n".encode() if event_id is not None else b""
    return head + b"data: " + dumps(persisted_json(event)) + b"\n\n"


async def _follow(
    ctx: ServerContext,
    waker: FeedWaker,
    read: Reader,
    position: str | None,
    first: tuple[list[RunEventPersisted], str | None],
    per_event_ids: bool,
) -> AsyncIterator[bytes]:
    ctx.metrics.streams.inc()
    try:
        async with waker.subscribed():
            # Reconnect after one second; comments keep idle connections (and proxies) alive.
            yield b"retry: 1000\n: connected\n\n"
            # A mark taken before a read: a commit after that read always wakes the wait.
            mark = waker.mark()
            events, position = first
            if not events:
                events, position = await read(position)
            while True:
                if events:
                    last = len(events) - 1
                    yield b"".join(
                        _frame(
                            e, str(e.seq) if per_event_ids else (position if i == last else None)
                        )
                        for i, e in enumerate(events)
                    )
                else:
                    await waker.wait(mark, ctx.stream_heartbeat_seconds)
                    if not mark.is_set():
                        yield b": keep-alive\n\n"
                mark = waker.mark()
                events, position = await read(position)
    except RunStateError as exc:
        # The stream cannot carry a status any more: say why in an error event, then end.
        log.warning("stream ended: %s", exc)
        problem = problem_document(exc.code, str(exc), **error_fields(exc))
        yield b"event: error\ndata: " + dumps(problem) + b"\n\n"
    finally:
        ctx.metrics.streams.dec()


async def feed_stream(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """GET /v1/feed/stream: every newly committed event of the store, as SSE."""
    params = query_params(request, frozenset({"cursor", "from"}))
    start = str_param(params, "from") or "now"
    if start not in ("now", "start"):
        raise InvalidInput("must be 'now' or 'start'", field="from")
    catalog = ctx.catalog
    cursor = request.headers.get("last-event-id") or str_param(params, "cursor")
    if cursor is None and start == "now":
        cursor = await catalog.feed_head()

    async def read(position: str | None) -> tuple[list[RunEventPersisted], str | None]:
        page = await catalog.read_feed(cursor=position, limit=STREAM_PAGE)
        return list(page.events), page.cursor

    waker = ctx.waker
    assert waker is not None  # the store is attached, so is its waker
    # The first read happens before the response starts: a bad cursor is a 400, not a stream.
    first = await read(cursor)
    return StreamingResponse(
        _follow(ctx, waker, read, cursor, first, per_event_ids=False),
        media_type=EVENT_STREAM,
        headers=_HEADERS,
    )


async def run_stream(ctx: ServerContext, request: Request, path: dict[str, str]) -> Response:
    """GET /v1/runs/{run_id}/events/stream: one run's events, stored then live, as SSE."""
    params = query_params(request, frozenset({"after_seq"}))
    run_id = path["run_id"]
    text = request.headers.get("last-event-id") or str_param(params, "after_seq") or "0"
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise InvalidInput("must be a seq (a non-negative integer)", field="after_seq")
    store = ctx.store
    if await store.get_run_metadata_by_run_id(run_id) is None:
        raise RunNotFound(run_id)

    async def read(position: str | None) -> tuple[list[RunEventPersisted], str | None]:
        after = int(position or 0)
        events = await store.list_events(run_id, after_seq=after, limit=STREAM_PAGE)
        return events, str(events[-1].seq) if events else position

    waker = ctx.waker
    assert waker is not None
    first = await read(text)
    return StreamingResponse(
        _follow(ctx, waker, read, text, first, per_event_ids=True),
        media_type=EVENT_STREAM,
        headers=_HEADERS,
    )


_LAST_EVENT_ID = Param(
    name="Last-Event-ID",
    where="header",
    schema={"type": "string"},
    description="Resume after this id (sent by EventSource clients when they reconnect).",
)

OPERATIONS = (
    Operation(
        operation_id="streamFeed",
        method="GET",
        path="/v1/feed/stream",
        scope=Scope.READ,
        handler=feed_stream,
        summary="Every newly committed event of the store, live, as Server-Sent Events",
        tag="live",
        ok="SseStream",
        ok_media_type=EVENT_STREAM,
        params=(
            Param(
                name="cursor",
                schema={"type": "string"},
                description="Start after this feed cursor (Last-Event-ID wins).",
            ),
            Param(
                name="from",
                schema={"type": "string", "enum": ["now", "start"]},
                description="Without a cursor: only new events (now, the default) or all.",
            ),
            _LAST_EVENT_ID,
        ),
        errors=("INVALID_INPUT",),
    ),
    Operation(
        operation_id="streamRunEvents",
        method="GET",
        path="/v1/runs/{run_id}/events/stream",
        scope=Scope.READ,
        handler=run_stream,
        summary="One run's events, stored then live, as Server-Sent Events (id: the seq)",
        tag="live",
        ok="SseStream",
        ok_media_type=EVENT_STREAM,
        params=(
            Param(
                name="after_seq",
                schema={"type": "integer", "minimum": 0},
                description="Start after this seq (Last-Event-ID wins).",
            ),
            _LAST_EVENT_ID,
        ),
        errors=("INVALID_INPUT", "RUN_NOT_FOUND"),
    ),
)
