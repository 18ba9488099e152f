"""Request and response helpers: bounded JSON bodies, strict query parameters, problems."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from ..errors import InvalidInput
from ..wire.problems import PROBLEM_MEDIA_TYPE, problem_document, status_for_code
from ..wire.values import MAX_WIRE_INT, dumps, loads, parse_time

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
JSON_MEDIA_TYPE = "application/json"


class Problem(Exception):
    """An HTTP-level refusal (auth, size, media type, route) rendered as a problem document."""

    def __init__(self, code: str, detail: str, **fields: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.fields = fields


def json_response(document: object, status: int = 200) -> Response:
    """A compact JSON response."""
    return Response(dumps(document), status_code=status, media_type=JSON_MEDIA_TYPE)


def problem_response(
    code: str, detail: str, *, instance: str | None = None, **fields: Any
) -> Response:
    """An ``application/problem+json`` response for ``code``."""
    document = problem_document(code, detail, instance=instance, **fields)
    headers = {"WWW-Authenticate": 'Bearer realm="runstate"'} if code == "UNAUTHORIZED" else None
    return Response(
        dumps(document),
        status_code=status_for_code(code),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _is_json_media_type(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON_MEDIA_TYPE or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request, max_bytes: int, *, optional: bool = False) -> object:
    """Read and decode the JSON body, refusing wrong media types and bodies over ``max_bytes``.

    ``Content-Type: application/json`` is required: a browser cannot send it cross-site
    without a CORS preflight (which this server never grants), so a web page cannot write to a
    loopback server without tokens.
    """
    headers = request.headers
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise Problem("BODY_TOO_LARGE", f"the body is over the limit of {max_bytes} bytes")
    # Straight from the ASGI channel: cheaper than Request.stream() on every write.
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise Problem("INVALID_INPUT", "the client went away before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise Problem("BODY_TOO_LARGE", f"the body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if not body and optional:
        return {}
    if not _is_json_media_type(headers.get("content-type")):
        raise Problem("UNSUPPORTED_MEDIA_TYPE", "send the body as Content-Type: application/json")
    return loads(body)


def query_params(
    request: Request, known: frozenset[str], repeatable: frozenset[str] = frozenset()
) -> QueryParams:
    """Return the query parameters, refusing unknown ones and repeats of single ones."""
    params = request.query_params
    for name in params:
        if name not in known:
            raise InvalidInput(f"unknown query parameter {name[:40]!r}", field=name[:40])
        if name not in repeatable and len(params.getlist(name)) > 1:
            raise InvalidInput("given more than once", field=name)
    return params


def int_param(
    params: Mapping[str, str], name: str, default: int | None, *, maximum: int = MAX_WIRE_INT
) -> int | None:
    """Parse a non-negative integer query parameter, at most ``maximum``."""
    text = params.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > maximum:
        raise InvalidInput(f"must be an integer from 0 to {maximum}", field=name)
    return int(text)


def time_param(params: Mapping[str, str], name: str) -> datetime | None:
    """Parse an RFC 3339 date-time query parameter."""
    text = params.get(name)
    if text is None:
        return None
    value = parse_time(text, name)
    if value is not None and value.tzinfo is None:
        raise InvalidInput("must carry a time zone (Z or +hh:mm)", field=name)
    return value


def str_param(params: Mapping[str, str], name: str) -> str | None:
    """Return a string query parameter (the store validates its content)."""
    return params.get(name)
