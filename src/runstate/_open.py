"""``open_store``: one entry point from a URL to a ready store, awaitable or ``async with``."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any

from ._url import StoreUrl, parse_store_url
from .errors import InvalidInput
from .store import RunStateStore

DEFAULT_URL = "sqlite:///./runstate.db"
URL_ENV_VAR = "RUNSTATE_URL"

StoreOpener = Callable[[StoreUrl, dict[str, Any]], Awaitable[RunStateStore]]


async def _open_memory(url: StoreUrl, options: dict[str, Any]) -> RunStateStore:
    from .adapters.memory import MemoryStore

    allowed = {"max_payload_bytes"}
    _refuse_unknown(url, options, allowed)
    name = url.raw.split("://", 1)[1].split("?", 1)[0].strip("/")
    return MemoryStore(name=name or None, **options)


async def _open_sqlite(url: StoreUrl, options: dict[str, Any]) -> RunStateStore:
    from .adapters.sqlite import open_sqlite_store

    return await open_sqlite_store(url, options)


async def _open_postgres(url: StoreUrl, options: dict[str, Any]) -> RunStateStore:
    from .adapters.postgres import open_postgres_store

    return await open_postgres_store(url, options)


async def _open_http(url: StoreUrl, options: dict[str, Any]) -> RunStateStore:
    from .adapters.http import open_http_store

    return await open_http_store(url, options)


_OPENERS: dict[str, StoreOpener] = {
    "memory": _open_memory,
    "sqlite": _open_sqlite,
    "postgresql": _open_postgres,
    "postgres": _open_postgres,
    "runstate+http": _open_http,
    "runstate+https": _open_http,
}


def register_store_scheme(scheme: str, opener: StoreOpener) -> None:
    """Make ``open_store`` hand URLs of ``scheme`` to ``opener`` (for third-party adapters)."""
    _OPENERS[scheme.lower()] = opener


def supported_schemes() -> list[str]:
    """Return the URL schemes ``open_store`` understands."""
    return sorted(_OPENERS)


def default_url() -> str:
    """Return ``$RUNSTATE_URL`` if set, else the embedded SQLite default."""
    return os.environ.get(URL_ENV_VAR) or DEFAULT_URL


def _refuse_unknown(url: StoreUrl, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown option(s) {', '.join(unknown)} for {url.scheme}:// "
            f"(supported: {', '.join(sorted(allowed))})",
            field="options",
        )


class _OpeningStore:
    """What ``open_store`` returns: await it for a store, or use it with ``async with``."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self._url = url
        self._options = options
        self._store: RunStateStore | None = None

    async def _open(self) -> RunStateStore:
        parsed = parse_store_url(self._url)
        opener = _OPENERS.get(parsed.scheme)
        if opener is None:
            raise InvalidInput(
                f"unsupported store URL scheme {parsed.scheme!r} in {parsed.masked!r}; "
                f"supported: {', '.join(s + '://' for s in supported_schemes())}",
                field="url",
            )
        return await opener(parsed, dict(self._options))

    def __await__(self) -> Generator[Any, None, RunStateStore]:
        return self._open().__await__()

    async def __aenter__(self) -> RunStateStore:
        self._store = await self._open()
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None


def open_store(url: str | None = None, **options: Any) -> _OpeningStore:
    """Open the store at ``url`` (default: ``$RUNSTATE_URL`` or ``sqlite:///./runstate.db``)."""
    return _OpeningStore(default_url() if url is None else url, options)
