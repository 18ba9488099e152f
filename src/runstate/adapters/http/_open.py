"""Opening a ``runstate+http(s)://`` store: the URL and its options, checked before connecting."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ...errors import InvalidInput
from ._store import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT_SECONDS, TOKEN_ENV_VAR, HttpStore

_OPTIONS = {"token", "timeout", "max_connections"}


def _option(options: dict[str, Any], query: Mapping[str, str], name: str, default: Any) -> Any:
    return options.get(name, query.get(name, default))


async def open_http_store(url: Any, options: dict[str, Any]) -> HttpStore:
    """Open ``runstate+http(s)://host:port[/prefix]``; options: token, timeout, max_connections."""
    unknown = sorted((set(options) | set(url.query)) - _OPTIONS)
    if unknown:
        raise InvalidInput(
            f"unknown option(s) {', '.join(unknown)} for {url.scheme}:// "
            f"(supported: {', '.join(sorted(_OPTIONS))}; the payload limit is the server's)",
            field="options",
        )
    if "token" in url.query:
        raise InvalidInput(
            "pass the token as token=... or $RUNSTATE_API_TOKEN, never in the URL", field="url"
        )
    parts = urlsplit(url.raw)
    if parts.username is not None or parts.password is not None or not parts.hostname:
        raise InvalidInput(
            f"expected {url.scheme}://host:port[/prefix] without user info", field="url"
        )
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput("the port must be a number from 0 to 65535", field="url") from None
    scheme = "https" if url.scheme == "runstate+https" else "http"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    base = f"{scheme}://{host}{'' if port is None else f':{port}'}{parts.path.rstrip('/')}"
    timeout = _positive_number(_option(options, url.query, "timeout", DEFAULT_TIMEOUT_SECONDS))
    connections = _option(options, url.query, "max_connections", DEFAULT_MAX_CONNECTIONS)
    if isinstance(connections, str) and connections.isdigit():
        connections = int(connections)
    if type(connections) is not int or connections < 1:
        raise InvalidInput("must be a positive int", field="max_connections")
    token = options.get("token", os.environ.get(TOKEN_ENV_VAR) or None)
    if token is not None and (type(token) is not str or not token or not token.isprintable()):
        raise InvalidInput("must be a non-empty printable string", field="token")
    return HttpStore(
        base,
        masked_url=f"{url.scheme}://{host}{'' if port is None else f':{port}'}",
        token=token,
        timeout=timeout,
        max_connections=connections,
    )


def _positive_number(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = -1.0
    if not number > 0 or number == float("inf"):
        raise InvalidInput("must be a positive number of seconds", field="timeout")
    return number
