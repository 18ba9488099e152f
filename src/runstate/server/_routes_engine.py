"""Routes of the run engine: create a run, lifecycle commands, record an event.

A command's ``Idempotency-Key`` header becomes the id of the event it writes. The engine skips
a command whose event id is already in the run's log and answers with the current state, so a
retried request (after a timeout, say) never appends twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..engine import RunEngine, RunState
from ..errors import InvalidInput
from ..wire.values import (
    METADATA_FIELDS,
    event_input_from_json,
    expect_object,
    json_type,
    metadata_from_json,
)
from ._auth import Scope
from ._context import ServerContext
from ._http import json_response, read_json
from ._router import Operation, Param
from ._runs import state_json

MAX_IDEMPOTENCY_KEY = 200  # leaves room for the engine's ":started" suffix in a 255-char id

IDEMPOTENCY_PARAM = Param(
    name="Idempotency-Key",
    where="header",
    schema={"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
    description="Makes a retried command a no-op: it becomes the id of the event written.",
)


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` header, checked."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidInput(
            f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters", field="Idempotency-Key"
        )
    return key


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and type(value) is not str:
        raise InvalidInput(f"must be a string or null, got {json_type(value)}", field=name)
    return value


async def create(ctx: ServerContext, request: Request, path: dict[str, str]) -> Response:
    """POST /v1/runs/{run_id}/create: the engine's create_run (queued, or sync: running)."""
    fields = (METADATA_FIELDS - {"run_id"}) | {"mode"}
    body = expect_object(await read_json(request, ctx.max_body_bytes), "body", fields)
    mode = body.pop("mode", "queued")
    if mode not in ("queued", "sync"):
        raise InvalidInput("must be 'queued' or 'sync'", field="mode")
    metadata = metadata_from_json({**body, "run_id": path["run_id"]}, "body")
    state = await ctx.engine.create_run(
        metadata, mode=mode, idempotency_key=idempotency_key(request)
    )
    ctx.notify_write()
    return json_response(state_json(state), 201)


Command = Callable[[RunEngine, str, dict[str, Any], str | None], Awaitable[RunState]]


def _command_handler(command: Command, fields: frozenset[str]) -> Any:
    async def handle(ctx: ServerContext, request: Request, path: dict[str, str]) -> Response:
        raw = await read_json(request, ctx.max_body_bytes, optional=True)
        body = expect_object(raw, "body", fields)
        state = await command(ctx.engine, path["run_id"], body, idempotency_key(request))
        ctx.notify_write()
        return json_response(state_json(state))

    return handle


async def _start(engine: RunEngine, run_id: str, body: dict[str, Any], key: str | None) -> RunState:
    return await engine.start(run_id, worker=_optional_str(body, "worker"), idempotency_key=key)


async def _pause(engine: RunEngine, run_id: str, body: dict[str, Any], key: str | None) -> RunState:
    return await engine.pause(run_id, reason=_optional_str(body, "reason"), idempotency_key=key)


async def _resume(
    engine: RunEngine, run_id: str, body: dict[str, Any], key: str | None
) -> RunState:
    return await engine.resume(run_id, reason=_optional_str(body, "reason"), idempotency_key=key)


async def _retry(engine: RunEngine, run_id: str, body: dict[str, Any], key: str | None) -> RunState:
    return await engine.retry(
        run_id, error=body.get("error"), reason=_optional_str(body, "reason"), idempotency_key=key
    )


async def _cancel(
    engine: RunEngine, run_id: str, body: dict[str, Any], key: str | None
) -> RunState:
    return await engine.cancel(run_id, reason=_optional_str(body, "reason"), idempotency_key=key)


async def _succeed(
    engine: RunEngine, run_id: str, body: dict[str, Any], key: str | None
) -> RunState:
    return await engine.succeed(run_id, output=body.get("output"), idempotency_key=key)


async def _fail(engine: RunEngine, run_id: str, body: dict[str, Any], key: str | None) -> RunState:
    return await engine.fail(run_id, error=body.get("error"), idempotency_key=key)


async def _time_out(
    engine: RunEngine, run_id: str, body: dict[str, Any], key: str | None
) -> RunState:
    return await engine.time_out(
        run_id, reason=_optional_str(body, "reason"), error=body.get("error"), idempotency_key=key
    )


async def record(ctx: ServerContext, request: Request, path: dict[str, str]) -> Response:
    """POST /v1/runs/{run_id}/record: append one event through the engine's rules."""
    raw = await read_json(request, ctx.max_body_bytes)
    key = idempotency_key(request)
    event = event_input_from_json(raw, "body")
    if key is not None:
        given = raw.get("event_id") if isinstance(raw, dict) else None
        if given is not None and given != key:
            raise InvalidInput("differs from the Idempotency-Key header", field="event_id")
        event = dataclasses.replace(event, event_id=key)
    state = await ctx.engine.record(path["run_id"], event)
    ctx.notify_write()
    return json_response(state_json(state))


_COMMANDS: tuple[tuple[str, Command, frozenset[str], str], ...] = (
    ("start", _start, frozenset({"worker"}), "QUEUED -> RUNNING"),
    ("pause", _pause, frozenset({"reason"}), "RUNNING -> PAUSED"),
    ("resume", _resume, frozenset({"reason"}), "PAUSED -> RUNNING"),
    ("retry", _retry, frozenset({"error", "reason"}), "RUNNING -> QUEUED, attempt + 1"),
    (
        "cancel",
        _cancel,
        frozenset({"reason"}),
        "Cancel (RUNNING -> CANCELLING; QUEUED, PAUSED, CANCELLING -> CANCELLED)",
    ),
    ("succeed", _succeed, frozenset({"output"}), "RUNNING or CANCELLING -> SUCCEEDED"),
    ("fail", _fail, frozenset({"error"}), "QUEUED, RUNNING or CANCELLING -> FAILED"),
    (
        "time_out",
        _time_out,
        frozenset({"reason", "error"}),
        "QUEUED, RUNNING or PAUSED -> TIMED_OUT",
    ),
)

_COMMAND_ERRORS = (
    "INVALID_INPUT",
    "RUN_NOT_FOUND",
    "INVALID_TRANSITION",
    "CONCURRENCY_CONFLICT",
    "BODY_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
)


def _command_operation(
    name: str, command: Command, fields: frozenset[str], summary: str
) -> Operation:
    return Operation(
        operation_id=f"command_{name}",
        method="POST",
        path=f"/v1/runs/{{run_id}}/{name}",
        scope=Scope.WRITE,
        handler=_command_handler(command, fields),
        summary=summary,
        tag="engine",
        ok="RunState",
        body=f"Command_{name}",
        body_required=False,
        params=(IDEMPOTENCY_PARAM,),
        errors=_COMMAND_ERRORS,
    )


OPERATIONS = (
    Operation(
        operation_id="createRun",
        method="POST",
        path="/v1/runs/{run_id}/create",
        scope=Scope.WRITE,
        handler=create,
        summary="Create a run through the engine: QUEUED, or QUEUED then RUNNING (mode sync)",
        tag="engine",
        ok_status=201,
        ok="RunState",
        body="CreateRunInput",
        params=(IDEMPOTENCY_PARAM,),
        errors=("INVALID_INPUT", "RUN_ALREADY_EXISTS", "BODY_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE"),
    ),
    *(_command_operation(*command) for command in _COMMANDS),
    Operation(
        operation_id="recordEvent",
        method="POST",
        path="/v1/runs/{run_id}/record",
        scope=Scope.WRITE,
        handler=record,
        summary="Record one event: steps and custom types keep the status, lifecycle types move it",
        tag="engine",
        ok="RunState",
        body="RunEventInput",
        params=(IDEMPOTENCY_PARAM,),
        errors=_COMMAND_ERRORS,
    ),
)

COMMAND_FIELDS = {name: fields for name, _, fields, _ in _COMMANDS}
