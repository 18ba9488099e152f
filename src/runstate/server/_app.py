"""The ASGI application: lifespan (open and close the store), dispatch, access, problems.

Routing, access checks, error rendering and metrics are done here in one pass per request,
without a middleware stack: per request the app costs little more than the bare ASGI server
(see the server section of the README for the measurements behind this choice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import __version__
from ..errors import RunStateError, StoreUnavailable
from ..store import RunStateStore
from ..tracing import remote_context
from ..wire.problems import error_fields
from ..wire.values import dumps
from ._auth import AccessPolicy, Scope, Token
from ._context import ServerContext
from ._http import DEFAULT_MAX_BODY_BYTES, Problem, json_response, problem_response, query_params
from ._openapi import openapi_document
from ._router import Operation, Router
from ._routes_engine import OPERATIONS as ENGINE_OPERATIONS
from ._routes_live import OPERATIONS as LIVE_OPERATIONS
from ._routes_outbox import OPERATIONS as OUTBOX_OPERATIONS
from ._routes_store import OPERATIONS as STORE_OPERATIONS
from .web import web_operations

log = logging.getLogger("runstate.server")

StoreOpener = Callable[[], Awaitable[RunStateStore]]
ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]

READY_TIMEOUT_SECONDS = 2.0
_READY_PROBE_RUN_ID = "runstate-readyz-probe"


async def healthz(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """GET /healthz: the process is up."""
    return json_response({"status": "ok"})


async def readyz(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """GET /readyz: the store answers a read within two seconds."""
    try:
        await asyncio.wait_for(
            ctx.store.get_run_metadata_by_run_id(_READY_PROBE_RUN_ID), READY_TIMEOUT_SECONDS
        )
    except TimeoutError:
        raise StoreUnavailable("the store did not answer in time", retryable=True) from None
    return json_response({"status": "ready"})


async def metrics(ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
    """GET /metrics: Prometheus text exposition."""
    query_params(request, frozenset())
    stats = None
    if ctx.has_outbox:
        stats = await ctx.outbox.outbox_stats()
    return Response(
        ctx.metrics.render(stats), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


def _operations_routes(openapi: Callable[..., Awaitable[Response]]) -> tuple[Operation, ...]:
    return (
        Operation(
            operation_id="healthz",
            method="GET",
            path="/healthz",
            scope=None,
            handler=healthz,
            summary="Liveness: the process is up",
            tag="operations",
            ok="Health",
        ),
        Operation(
            operation_id="readyz",
            method="GET",
            path="/readyz",
            scope=None,
            handler=readyz,
            summary="Readiness: the store is reachable",
            tag="operations",
            ok="Health",
        ),
        Operation(
            operation_id="metrics",
            method="GET",
            path="/metrics",
            scope=None,
            handler=metrics,
            summary="Prometheus metrics (a read token is needed when tokens are configured)",
            tag="operations",
            ok_media_type="text/plain",
            errors=("INVALID_INPUT",),
        ),
        Operation(
            operation_id="openapi",
            method="GET",
            path="/openapi.json",
            scope=None,
            handler=openapi,
            summary="This OpenAPI 3.1 document",
            tag="operations",
        ),
    )


class ApiApp:
    """The runstate HTTP API as an ASGI application."""

    def __init__(
        self,
        open_store: StoreOpener,
        *,
        tokens: tuple[Token, ...] = (),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        stream_heartbeat_seconds: float = 15.0,
    ) -> None:
        self._open_store = open_store
        self.context = ServerContext(
            access=AccessPolicy(tokens),
            max_body_bytes=max_body_bytes,
            stream_heartbeat_seconds=stream_heartbeat_seconds,
        )
        operations = (
            *STORE_OPERATIONS,
            *ENGINE_OPERATIONS,
            *LIVE_OPERATIONS,
            *OUTBOX_OPERATIONS,
            *_operations_routes(self._openapi),
        )
        self.operations = operations
        # The web view's pages sit beside the API in one router, outside the OpenAPI document.
        self._router = Router((*operations, *web_operations(self.context)))
        self._openapi_body: bytes | None = None
        # Metrics need a read token once tokens exist; the document stays public.
        self._metrics_scope_needed = not self.context.access.open

    async def _openapi(self, ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
        if self._openapi_body is None:
            document = openapi_document(
                self.operations, version=__version__, tokens=not self.context.access.open
            )
            self._openapi_body = dumps(document)
        return Response(self._openapi_body, media_type="application/json")

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        """Serve one ASGI connection scope."""
        kind = scope["type"]
        if kind == "http":
            response = await self._handle(scope, receive)
            await response(scope, receive, send)  # type: ignore[arg-type]
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.context.attach(await self._open_store())
                except Exception as exc:
                    log.error("cannot open the store: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                store = await self.context.detach()
                if store is not None:
                    await store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: dict[str, Any], receive: ASGIReceive) -> Response:
        started = time.perf_counter()
        request = Request(scope, receive)
        operation_id = "unmatched"
        try:
            raw = scope.get("raw_path") or scope["path"].encode("utf-8")
            matched = self._router.match(scope["method"], raw.split(b"?", 1)[0].decode("latin-1"))
            if isinstance(matched, list):
                raise _no_route(matched)
            operation, path = matched
            operation_id = operation.operation_id
            self._check_access(operation, request)
            # The caller's trace (W3C headers) is the parent of what this request writes.
            headers = request.headers
            with remote_context(headers.get("traceparent"), headers.get("tracestate")):
                response = await operation.handler(self.context, request, path)
        except RunStateError as exc:
            response = self._error_response(exc, request)
        except Problem as problem:
            response = problem_response(
                problem.code, problem.detail, instance=scope_path(request), **problem.fields
            )
        except Exception:
            log.exception("unexpected error in %s %s", scope["method"], scope_path(request))
            response = problem_response(
                "INTERNAL_ERROR", "unexpected server error (logged)", instance=scope_path(request)
            )
        self.context.metrics.observe(
            operation_id, response.status_code, time.perf_counter() - started
        )
        return response

    def _check_access(self, operation: Operation, request: Request) -> None:
        needed = operation.scope
        if needed is None:
            if operation.operation_id != "metrics" or not self._metrics_scope_needed:
                return
            needed = Scope.READ
        headers = request.headers
        refusal = self.context.access.check(
            headers.get("authorization"), headers.get("host"), needed
        )
        if refusal == "UNAUTHORIZED":
            raise Problem("UNAUTHORIZED", "send Authorization: Bearer <token>")
        if refusal == "FORBIDDEN":
            if self.context.access.open:
                raise Problem("FORBIDDEN", "without tokens the server answers loopback hosts only")
            raise Problem("FORBIDDEN", f"this needs a token of scope {needed.name.lower()}")

    def _error_response(self, exc: RunStateError, request: Request) -> Response:
        fields = error_fields(exc)
        detail = str(exc)
        if isinstance(exc, StoreUnavailable):
            # The store's own message may name hosts and databases: it goes to the log only.
            log.warning("store unavailable: %s", exc)
            detail = "the store is unavailable" + (", try again" if exc.retryable else "")
        return problem_response(exc.code, detail, instance=scope_path(request), **fields)


def scope_path(request: Request) -> str:
    """The request's path, for problem documents and logs (never its query)."""
    return str(request.scope["path"])


def _no_route(allowed: list[str]) -> Problem:
    if allowed:
        return Problem("METHOD_NOT_ALLOWED", f"allowed: {', '.join(sorted(set(allowed)))}")
    return Problem("NOT_FOUND", "no such route; see /openapi.json")


def create_app(
    open_store: StoreOpener,
    *,
    tokens: tuple[Token, ...] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    stream_heartbeat_seconds: float = 15.0,
) -> ApiApp:
    """Build the API app; ``open_store`` is awaited on the server's loop at start-up."""
    return ApiApp(
        open_store,
        tokens=tokens,
        max_body_bytes=max_body_bytes,
        stream_heartbeat_seconds=stream_heartbeat_seconds,
    )
