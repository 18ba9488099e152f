"""The operation table's router: matches the raw path, one percent-decoded segment per parameter.

Matching the raw path (not the decoded one) lets a run id contain ``/`` (sent as ``%2F``):
every adapter accepts such ids, so every route must address them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from ..errors import InvalidInput
from ._auth import Scope

if TYPE_CHECKING:
    from ._context import ServerContext

Handler = Callable[["ServerContext", Request, dict[str, str]], Awaitable[Response]]


@dataclass(frozen=True, kw_only=True, slots=True)
class Param:
    """A query or header parameter, for the OpenAPI document."""

    name: str
    schema: dict[str, Any]
    description: str
    where: str = "query"
    required: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Operation:
    """One route: method, path template, scope, handler, and what OpenAPI says about it.

    ``body`` and ``ok`` name schemas of the OpenAPI components (``ok`` may be a media type
    for non-JSON answers); ``errors`` lists the problem codes it may answer with.
    """

    operation_id: str
    method: str
    path: str
    scope: Scope | None
    handler: Handler
    summary: str
    tag: str
    ok_status: int = 200
    ok: str | None = None
    ok_media_type: str = "application/json"
    body: str | None = None
    body_required: bool = True
    params: tuple[Param, ...] = ()
    errors: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class _Template:
    operation: Operation
    segments: tuple[str, ...]
    names: tuple[int, ...] = field(default=())


class Router:
    """Find the operation for a method and a raw path."""

    def __init__(self, operations: Iterable[Operation]) -> None:
        self._by_length: dict[int, list[_Template]] = {}
        for operation in operations:
            segments = tuple(operation.path.split("/"))
            names = tuple(i for i, s in enumerate(segments) if s.startswith("{"))
            template = _Template(operation=operation, segments=segments, names=names)
            self._by_length.setdefault(len(segments), []).append(template)

    def match(self, method: str, raw_path: str) -> tuple[Operation, dict[str, str]] | list[str]:
        """Return the operation and its path parameters, or the methods the path allows."""
        parts = raw_path.split("/")
        allowed: list[str] = []
        for template in self._by_length.get(len(parts), ()):
            if not _fits(template, parts):
                continue
            if template.operation.method != method and not (
                method == "HEAD" and template.operation.method == "GET"
            ):
                allowed.append(template.operation.method)
                continue
            params = {}
            for index in template.names:
                name = template.segments[index][1:-1]
                try:
                    params[name] = unquote(parts[index], errors="strict")
                except UnicodeDecodeError:
                    raise InvalidInput("is not percent-encoded UTF-8", field=name) from None
            return template.operation, params
        return allowed


def _fits(template: _Template, parts: list[str]) -> bool:
    for index, segment in enumerate(template.segments):
        if index in template.names:
            if not parts[index]:
                return False
        elif parts[index] != segment:
            return False
    return True
