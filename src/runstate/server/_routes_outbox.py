"""Routes of the outbox: status for operators (read), and the relay's operations (admin).

The admin routes are the whole ``OutboxStore`` protocol, so a relay can run against a remote
server through the ``runstate+http`` adapter exactly as against a local database.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import InvalidInput
from ..wire.catalog import dead_letter_json
from ..wire.values import (
    MAX_WIRE_INT,
    expect_object,
    json_type,
    outbox_record_json,
    outbox_stats_json,
    parse_number,
    parse_required_time,
    parse_time,
    parse_wire_int,
    require,
)
from ._auth import Scope
from ._context import ServerContext
from ._http import int_param, json_response, query_params, read_json, str_param
from ._router import Operation, Param

MAX_WAIT_SECONDS = 60.0
#: The most records one claim hands out; a claim asks for "up to limit", so more is clamped.
MAX_CLAIM = 10_000
MAX_IDS = 10_000


def _owner(body: dict[str, Any]) -> str:
    owner = require(body, "owner", "")
    if type(owner) is not str:
        raise InvalidInput(f"must be a string, got {json_type(owner)}", field="owner")
    return owner


def _ids(body: dict[str, Any]) -> list[int]:
    ids = require(body, "outbox_ids", "")
    if type(ids) is not list or len(ids) > MAX_IDS:
        raise InvalidInput(f"must be an array of at most {MAX_IDS} ids", field="outbox_ids")
    return [parse_wire_int(value, "outbox_ids", minimum=1) for value in ids]


async def _body(ctx: ServerContext, request: Request, fields: set[str]) -> dict[str, Any]:
    return expect_object(await read_json(request, ctx.max_body_bytes), "body", frozenset(fields))


async def stats(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """GET /v1/outbox: backlog, in flight, dead letters, delivered, oldest pending."""
    query_params(request, frozenset())
    return json_response(outbox_stats_json(await ctx.outbox.outbox_stats()))


async def store_identity(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """GET /v1/outbox/store: the store's id (the relay's default CloudEvents source)."""
    query_params(request, frozenset())
    return json_response({"store_id": await ctx.outbox.store_id()})


async def redrive(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """POST /v1/outbox/redrive: make dead letters (of one run, or all) deliverable again."""
    raw = await read_json(request, ctx.max_body_bytes, optional=True)
    body = expect_object(raw, "body", frozenset({"run_id"}))
    count = await ctx.outbox.redrive_dead_letters(run_id=body.get("run_id"))
    ctx.notify_write()
    return json_response({"redriven": count})


async def claim(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """POST /v1/outbox/claim: lease deliverable records to an owner, in per-run order."""
    body = await _body(ctx, request, {"owner", "limit", "lease_seconds"})
    limit = parse_wire_int(require(body, "limit", ""), "limit")
    # The store checks the lease's range (the same on every adapter).
    lease_seconds = parse_number(require(body, "lease_seconds", ""), "lease_seconds")
    records = await ctx.outbox.claim_outbox_batch(
        owner=_owner(body), limit=min(limit, MAX_CLAIM), lease_seconds=lease_seconds
    )
    return json_response({"records": [outbox_record_json(r) for r in records]})


async def delivered(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """POST /v1/outbox/delivered: record delivery of records the owner leased."""
    body = await _body(ctx, request, {"owner", "outbox_ids"})
    count = await ctx.outbox.mark_delivered(_ids(body), owner=_owner(body))
    return json_response({"updated": count})


async def failed(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """POST /v1/outbox/failed: a failed delivery, retried at retry_at or dead-lettered."""
    body = await _body(ctx, request, {"owner", "outbox_id", "error", "retry_at"})
    error = require(body, "error", "")
    if type(error) is not str:
        raise InvalidInput(f"must be a string, got {json_type(error)}", field="error")
    retry_at = parse_time(body.get("retry_at"), "retry_at", optional=True)
    await ctx.outbox.mark_failed(
        parse_wire_int(require(body, "outbox_id", ""), "outbox_id", minimum=1),
        owner=_owner(body),
        error=error,
        retry_at=retry_at,
    )
    return Response(status_code=204)


async def release(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """POST /v1/outbox/release: give leased records back undelivered."""
    body = await _body(ctx, request, {"owner", "outbox_ids"})
    await ctx.outbox.release_outbox(_ids(body), owner=_owner(body))
    ctx.notify_write()
    return Response(status_code=204)


async def purge(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """POST /v1/outbox/purge: delete up to ``limit`` records delivered before older_than."""
    body = await _body(ctx, request, {"older_than", "limit"})
    older_than = parse_required_time(require(body, "older_than", ""), "older_than")
    limit = parse_wire_int(body.get("limit", 1000), "limit")
    count = await ctx.outbox.purge_delivered(older_than=older_than, limit=limit)
    return json_response({"purged": count})


async def wait(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """POST /v1/outbox/wait: return when new records may be claimable, or after timeout."""
    body = await _body(ctx, request, {"timeout"})
    timeout = parse_number(require(body, "timeout", ""), "timeout")
    if not 0 <= timeout <= MAX_WAIT_SECONDS:
        raise InvalidInput(f"must be from 0 to {MAX_WAIT_SECONDS:g} seconds", field="timeout")
    await ctx.outbox.wait_for_outbox(timeout)
    return Response(status_code=204)


async def dead_letters(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """GET /v1/outbox/dead-letters?run_id=&limit=&after_outbox_id=: dead letters, oldest first."""
    params = query_params(request, frozenset({"run_id", "limit", "after_outbox_id"}))
    letters = await ctx.outbox.list_dead_letters(
        run_id=str_param(params, "run_id"),
        limit=int_param(params, "limit", 100, maximum=MAX_IDS) or 0,
        after_outbox_id=int_param(params, "after_outbox_id", None),
    )
    return json_response({"dead_letters": [dead_letter_json(letter) for letter in letters]})


def _admin(operation_id: str, path: str, handler: Any, summary: str, **extra: Any) -> Operation:
    return Operation(
        operation_id=operation_id,
        method="POST",
        path=path,
        scope=Scope.ADMIN,
        handler=handler,
        summary=summary,
        tag="outbox",
        errors=("INVALID_INPUT", "BODY_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE"),
        **extra,
    )


OPERATIONS = (
    Operation(
        operation_id="outboxStats",
        method="GET",
        path="/v1/outbox",
        scope=Scope.READ,
        handler=stats,
        summary="Outbox status: pending, in flight, dead letters, delivered, oldest pending",
        tag="outbox",
        ok="OutboxStats",
    ),
    Operation(
        operation_id="outboxDeadLetters",
        method="GET",
        path="/v1/outbox/dead-letters",
        scope=Scope.READ,
        handler=dead_letters,
        summary="Dead-lettered records oldest first, with their last error and attempts",
        tag="outbox",
        ok="DeadLetterList",
        params=(
            Param(name="run_id", schema={"type": "string"}, description="Only this run's."),
            Param(
                name="limit",
                schema={"type": "integer", "minimum": 0, "maximum": MAX_IDS},
                description="At most this many (default 100).",
            ),
            Param(
                name="after_outbox_id",
                schema={"type": "integer", "minimum": 0, "maximum": MAX_WIRE_INT},
                description="The last outbox_id of the previous page.",
            ),
        ),
        errors=("INVALID_INPUT",),
    ),
    Operation(
        operation_id="outboxStoreId",
        method="GET",
        path="/v1/outbox/store",
        scope=Scope.READ,
        handler=store_identity,
        summary="The store's id, made with the store: the relay's default CloudEvents source",
        tag="outbox",
        ok="StoreIdentity",
    ),
    _admin(
        "outboxRedrive",
        "/v1/outbox/redrive",
        redrive,
        "Re-drive dead letters (of one run, or all)",
        ok="RedriveResult",
        body="RedriveInput",
        body_required=False,
    ),
    _admin(
        "outboxClaim",
        "/v1/outbox/claim",
        claim,
        "Lease deliverable records in per-run order",
        ok="ClaimResult",
        body="ClaimInput",
    ),
    _admin(
        "outboxDelivered",
        "/v1/outbox/delivered",
        delivered,
        "Mark leased records delivered",
        ok="UpdatedCount",
        body="LeasedIds",
    ),
    _admin(
        "outboxFailed",
        "/v1/outbox/failed",
        failed,
        "Record a failed delivery: retry later, or dead-letter",
        ok_status=204,
        body="FailedInput",
    ),
    _admin(
        "outboxRelease",
        "/v1/outbox/release",
        release,
        "Give leased records back undelivered",
        ok_status=204,
        body="LeasedIds",
    ),
    _admin(
        "outboxPurge",
        "/v1/outbox/purge",
        purge,
        "Delete records delivered before a time, in small batches",
        ok="PurgeResult",
        body="PurgeInput",
    ),
    _admin(
        "outboxWait",
        "/v1/outbox/wait",
        wait,
        "Long-poll: return when new records may be claimable, or after timeout (max 60 s)",
        ok_status=204,
        body="WaitInput",
    ),
)
