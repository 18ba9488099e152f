"""Routes of the store itself (docs/design.md, "The store contract") and its catalog:
writes, reads, the feed."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..engine import project
from ..errors import RunNotFound
from ..wire.values import (
    append_result_json,
    bootstrap_from_json,
    events_from_json,
    expect_object,
    feed_page_json,
    metadata_json,
    parse_wire_int,
    persisted_json,
    require,
    summary_json,
)
from ._auth import Scope
from ._context import ServerContext
from ._http import int_param, json_response, query_params, read_json, str_param, time_param
from ._router import Operation, Param
from ._runs import (
    RUN_FILTER_REPEATABLE,
    RUN_QUERY_PARAMS,
    descending_param,
    run_filter_from_params,
    state_json,
)

MAX_PAGE = 1000
_APPEND_FIELDS = frozenset({"events", "expected_seq"})


async def bootstrap(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """POST /v1/runs: metadata, first events and their outbox records, atomically."""
    bootstrap_input = bootstrap_from_json(await read_json(request, ctx.max_body_bytes))
    result = await ctx.store.bootstrap_run_tx(bootstrap_input)
    ctx.notify_write()
    return json_response(append_result_json(result), 201)


async def append(ctx: ServerContext, request: Request, path: dict[str, str]) -> Response:
    """POST /v1/runs/{run_id}/events: append to an existing run, optionally at a seq."""
    body = expect_object(await read_json(request, ctx.max_body_bytes), "body", _APPEND_FIELDS)
    events = events_from_json(require(body, "events", ""), "events")
    expected_seq = body.get("expected_seq")
    if expected_seq is not None:
        expected_seq = parse_wire_int(expected_seq, "expected_seq")
    result = await ctx.store.append_and_enqueue_tx(
        path["run_id"], events, expected_seq=expected_seq
    )
    ctx.notify_write()
    return json_response(append_result_json(result))


async def get_metadata(ctx: ServerContext, request: Request, path: dict[str, str]) -> Response:
    """GET /v1/runs/{run_id}/metadata."""
    query_params(request, frozenset())
    metadata = await ctx.store.get_run_metadata_by_run_id(path["run_id"])
    if metadata is None:
        raise RunNotFound(path["run_id"])
    return json_response(metadata_json(metadata))


async def get_run(ctx: ServerContext, request: Request, path: dict[str, str]) -> Response:
    """GET /v1/runs/{run_id}: metadata and the projected state."""
    query_params(request, frozenset())
    run_id = path["run_id"]
    metadata = await ctx.store.get_run_metadata_by_run_id(run_id)
    if metadata is None:
        raise RunNotFound(run_id)
    state = project(metadata, await ctx.store.list_events(run_id), upcasters=ctx.engine.upcasters)
    return json_response({"metadata": metadata_json(metadata), "state": state_json(state)})


async def list_events(ctx: ServerContext, request: Request, path: dict[str, str]) -> Response:
    """GET /v1/runs/{run_id}/events?after_seq=&limit=: a page of the run's events."""
    params = query_params(request, frozenset({"after_seq", "limit"}))
    after_seq = int_param(params, "after_seq", 0) or 0
    limit = int_param(params, "limit", MAX_PAGE, maximum=MAX_PAGE)
    run_id = path["run_id"]
    events = await ctx.store.list_events(run_id, after_seq=after_seq, limit=limit)
    # Events are never visible before their run's metadata, so only an empty page can be an
    # unknown run: the extra read is paid there only.
    if not events and await ctx.store.get_run_metadata_by_run_id(run_id) is None:
        raise RunNotFound(run_id)
    return json_response({"events": [persisted_json(e) for e in events]})


async def list_runs(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """GET /v1/runs: run summaries matching a filter, in keyset cursor pages."""
    params = query_params(request, RUN_QUERY_PARAMS, repeatable=RUN_FILTER_REPEATABLE)
    page = await ctx.catalog.query_runs(
        run_filter_from_params(params),
        order_by=params.get("order_by", "created_at"),  # type: ignore[arg-type]
        descending=descending_param(params),
        limit=int_param(params, "limit", 50, maximum=MAX_PAGE) or 0,
        cursor=str_param(params, "cursor"),
    )
    return json_response(
        {"runs": [summary_json(s) for s in page.runs], "next_cursor": page.next_cursor}
    )


async def count_runs(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """GET /v1/catalog/run-counts: how many runs match the filter, per status."""
    known = RUN_QUERY_PARAMS - {"order_by", "descending", "limit", "cursor"}
    params = query_params(request, known, repeatable=RUN_FILTER_REPEATABLE)
    counts = await ctx.catalog.count_runs_by_status(run_filter_from_params(params))
    return json_response({"counts": dict(counts)})


async def catalog_runs(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """GET /v1/catalog/runs: RunCatalog.list_runs as is (offset paging, no projection)."""
    params = query_params(
        request, frozenset({"workflow", "tenant_id", "created_after", "limit", "offset"})
    )
    runs = await ctx.catalog.list_runs(
        workflow=str_param(params, "workflow"),
        tenant_id=str_param(params, "tenant_id"),
        created_after=time_param(params, "created_after"),
        limit=int_param(params, "limit", 50, maximum=MAX_PAGE) or 0,
        offset=int_param(params, "offset", 0) or 0,
    )
    return json_response({"runs": [summary_json(s) for s in runs]})


async def read_feed(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """GET /v1/feed?cursor=&limit=: events of every run committed after the cursor."""
    params = query_params(request, frozenset({"cursor", "limit"}))
    page = await ctx.catalog.read_feed(
        cursor=str_param(params, "cursor"),
        limit=int_param(params, "limit", 500, maximum=MAX_PAGE) or 0,
    )
    return json_response(feed_page_json(page))


async def feed_head(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """GET /v1/feed/head: a cursor at the current end of the feed."""
    query_params(request, frozenset())
    return json_response({"cursor": await ctx.catalog.feed_head()})


_RUN_ID = "/v1/runs/{run_id}"
_LIMIT = Param(
    name="limit", schema={"type": "integer", "minimum": 0, "maximum": MAX_PAGE}, description=""
)

_STATUSES = {"type": "array", "items": {"$ref": "#/components/schemas/RunStatus"}}
_FILTER_PARAMS = (
    Param(
        name="status",
        schema=_STATUSES,
        description="Only runs in one of these statuses (repeat the parameter).",
    ),
    Param(
        name="exclude_status",
        schema=_STATUSES,
        description="No runs in these statuses (repeat the parameter).",
    ),
    Param(name="workflow", schema={"type": "string"}, description="Only this workflow."),
    Param(name="tenant", schema={"type": "string"}, description="Only this tenant."),
    Param(name="tenant_id", schema={"type": "string"}, description="The same as tenant."),
    Param(
        name="label",
        schema={"type": "array", "items": {"type": "string", "pattern": "="}},
        description="key=value: only runs with this label (repeat: all must match).",
    ),
    Param(
        name="created_after",
        schema={"type": "string", "format": "date-time"},
        description="Only runs created at or after this time (RFC 3339).",
    ),
    Param(
        name="since",
        schema={"type": "string", "format": "date-time"},
        description="The same as created_after.",
    ),
    Param(
        name="created_before",
        schema={"type": "string", "format": "date-time"},
        description="Only runs created before this time (RFC 3339).",
    ),
    Param(
        name="run_id_prefix",
        schema={"type": "string"},
        description="Only runs whose id starts with this.",
    ),
)

OPERATIONS = (
    Operation(
        operation_id="bootstrapRun",
        method="POST",
        path="/v1/runs",
        scope=Scope.WRITE,
        handler=bootstrap,
        summary="Create a run: metadata, first events and outbox records in one transaction",
        tag="store",
        ok_status=201,
        ok="AppendResult",
        body="RunBootstrapInput",
        errors=("INVALID_INPUT", "RUN_ALREADY_EXISTS", "BODY_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE"),
    ),
    Operation(
        operation_id="appendEvents",
        method="POST",
        path=f"{_RUN_ID}/events",
        scope=Scope.WRITE,
        handler=append,
        summary="Append events to an existing run (optionally only at expected_seq)",
        tag="store",
        ok="AppendResult",
        body="AppendInput",
        errors=(
            "INVALID_INPUT",
            "RUN_NOT_FOUND",
            "CONCURRENCY_CONFLICT",
            "BODY_TOO_LARGE",
            "UNSUPPORTED_MEDIA_TYPE",
        ),
    ),
    Operation(
        operation_id="getRun",
        method="GET",
        path=_RUN_ID,
        scope=Scope.READ,
        handler=get_run,
        summary="A run's metadata and projected state",
        tag="store",
        ok="RunView",
        errors=("INVALID_INPUT", "RUN_NOT_FOUND"),
    ),
    Operation(
        operation_id="getRunMetadata",
        method="GET",
        path=f"{_RUN_ID}/metadata",
        scope=Scope.READ,
        handler=get_metadata,
        summary="A run's metadata only",
        tag="store",
        ok="RunMetadata",
        errors=("INVALID_INPUT", "RUN_NOT_FOUND"),
    ),
    Operation(
        operation_id="listEvents",
        method="GET",
        path=f"{_RUN_ID}/events",
        scope=Scope.READ,
        handler=list_events,
        summary="A page of a run's events in seq order",
        tag="store",
        ok="EventList",
        params=(
            Param(name="after_seq", schema={"type": "integer", "minimum": 0}, description=""),
            _LIMIT,
        ),
        errors=("INVALID_INPUT", "RUN_NOT_FOUND"),
    ),
    Operation(
        operation_id="listRuns",
        method="GET",
        path="/v1/runs",
        scope=Scope.READ,
        handler=list_runs,
        summary="Run summaries matching a filter, sorted, in keyset cursor pages",
        tag="store",
        ok="RunList",
        params=(
            *_FILTER_PARAMS,
            Param(
                name="order_by",
                schema={
                    "type": "string",
                    "enum": ["created_at", "updated_at", "workflow", "status"],
                },
                description="The sort key (default created_at); ties are broken by run_id.",
            ),
            Param(
                name="descending",
                schema={"type": "string", "enum": ["true", "false"]},
                description="Sort descending (default true).",
            ),
            Param(
                name="limit",
                schema={"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                description="Runs per page (default 50).",
            ),
            Param(
                name="cursor",
                schema={"type": "string"},
                description="The next_cursor of the previous page, with the same filter and order.",
            ),
        ),
        errors=("INVALID_INPUT",),
    ),
    Operation(
        operation_id="countRuns",
        method="GET",
        path="/v1/catalog/run-counts",
        scope=Scope.READ,
        handler=count_runs,
        summary="How many runs match a filter, per status (the status parameter is ignored)",
        tag="catalog",
        ok="RunCounts",
        params=_FILTER_PARAMS,
        errors=("INVALID_INPUT",),
    ),
    Operation(
        operation_id="catalogListRuns",
        method="GET",
        path="/v1/catalog/runs",
        scope=Scope.READ,
        handler=catalog_runs,
        summary="RunCatalog.list_runs: summaries newest first, offset paging, no projection",
        tag="catalog",
        ok="RunSummaryList",
        params=(
            Param(name="workflow", schema={"type": "string"}, description=""),
            Param(name="tenant_id", schema={"type": "string"}, description=""),
            Param(
                name="created_after",
                schema={"type": "string", "format": "date-time"},
                description="",
            ),
            _LIMIT,
            Param(name="offset", schema={"type": "integer", "minimum": 0}, description=""),
        ),
        errors=("INVALID_INPUT",),
    ),
    Operation(
        operation_id="readFeed",
        method="GET",
        path="/v1/feed",
        scope=Scope.READ,
        handler=read_feed,
        summary="Events of every run committed after a commit-safe cursor",
        tag="catalog",
        ok="FeedPage",
        params=(
            Param(
                name="cursor",
                schema={"type": "string"},
                description="A cursor from a previous page or /v1/feed/head; omit: from the start.",
            ),
            _LIMIT,
        ),
        errors=("INVALID_INPUT",),
    ),
    Operation(
        operation_id="feedHead",
        method="GET",
        path="/v1/feed/head",
        scope=Scope.READ,
        handler=feed_head,
        summary="A cursor at the current end of the feed",
        tag="catalog",
        ok="FeedCursor",
    ),
)
