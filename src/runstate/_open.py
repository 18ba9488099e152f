"""The adapter registry: URL scheme -> how to open a store and how to migrate its schema.

``open_store`` is the one entry point from a URL to a ready store (awaitable or ``async with``);
``migration_status`` is what ``runstate migrate`` runs. Built-in adapters register here like
third-party ones do, with ``register_store_scheme``; each is imported only when first used.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._url import StoreUrl, parse_store_url
from .errors import InvalidInput
from .store import RunStateStore, SchemaMigrator
from .types import MigrationState, MigrationStatus

DEFAULT_URL = "sqlite:///./runstate.db"
URL_ENV_VAR = "RUNSTATE_URL"

StoreOpener = Callable[[StoreUrl, dict[str, Any]], Awaitable[RunStateStore]]


@dataclass(frozen=True, kw_only=True, slots=True)
class _Scheme:
    open: StoreOpener
    migrator: Callable[[], SchemaMigrator | None]


async def _open_memory(url: StoreUrl, options: dict[str, Any]) -> RunStateStore:
    from .adapters.memory import open_memory_store

    return await open_memory_store(url, options)


async def _open_sqlite(url: StoreUrl, options: dict[str, Any]) -> RunStateStore:
    from .adapters.sqlite import open_sqlite_store

    return await open_sqlite_store(url, options)


async def _open_postgres(url: StoreUrl, options: dict[str, Any]) -> RunStateStore:
    from .adapters.postgres import open_postgres_store

    return await open_postgres_store(url, options)


async def _open_http(url: StoreUrl, options: dict[str, Any]) -> RunStateStore:
    from .adapters.http import open_http_store

    return await open_http_store(url, options)


def _sqlite_migrator() -> SchemaMigrator:
    from .adapters.sqlite import MIGRATOR

    return MIGRATOR


def _postgres_migrator() -> SchemaMigrator:
    from .adapters.postgres import MIGRATOR

    return MIGRATOR


def _no_migrator() -> None:
    return None


# A remote store (runstate+http) is migrated by the server that owns its database.
_SCHEMES: dict[str, _Scheme] = {
    "memory": _Scheme(open=_open_memory, migrator=_no_migrator),
    "sqlite": _Scheme(open=_open_sqlite, migrator=_sqlite_migrator),
    "postgresql": _Scheme(open=_open_postgres, migrator=_postgres_migrator),
    "postgres": _Scheme(open=_open_postgres, migrator=_postgres_migrator),
    "runstate+http": _Scheme(open=_open_http, migrator=_no_migrator),
    "runstate+https": _Scheme(open=_open_http, migrator=_no_migrator),
}


def register_store_scheme(
    scheme: str, opener: StoreOpener, *, migrator: SchemaMigrator | None = None
) -> None:
    """Make ``open_store`` hand URLs of ``scheme`` to ``opener`` (for third-party adapters).

    With ``migrator``, ``runstate migrate`` (and ``migration_status``) read and upgrade the
    schema of stores with that scheme; without one, they report nothing to migrate.
    """
    _SCHEMES[scheme.lower()] = _Scheme(open=opener, migrator=lambda: migrator)


def supported_schemes() -> list[str]:
    """Return the URL schemes ``open_store`` understands."""
    return sorted(_SCHEMES)


def default_url() -> str:
    """Return ``$RUNSTATE_URL`` if set, else the embedded SQLite default."""
    return os.environ.get(URL_ENV_VAR) or DEFAULT_URL


def refuse_unknown_options(url: StoreUrl, options: Mapping[str, Any], allowed: set[str]) -> None:
    """Raise ``InvalidInput`` naming every option an adapter does not support."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown option(s) {', '.join(unknown)} for {url.scheme}:// "
            f"(supported: {', '.join(sorted(allowed))})",
            field="options",
        )


def _scheme_of(parsed: StoreUrl) -> _Scheme:
    entry = _SCHEMES.get(parsed.scheme)
    if entry is None:
        raise InvalidInput(
            f"unsupported store URL scheme {parsed.scheme!r} in {parsed.masked!r}; "
            f"supported: {', '.join(s + '://' for s in supported_schemes())}",
            field="url",
        )
    return entry


async def migration_status(url: str, *, apply: bool, **options: Any) -> MigrationStatus:
    """Report (and with ``apply``, bring up to date) the schema of the store at ``url``."""
    parsed = parse_store_url(url)
    migrator = _scheme_of(parsed).migrator()
    if migrator is None:
        return MigrationStatus(applied_version=0, latest_version=0, migrations=())
    before = await migrator.applied_version(parsed, options)
    after = (await migrator.migrate(parsed, options))[1] if apply else before
    states = []
    for version, name in migrator.migrations():
        if version <= before:
            state = "applied"
        elif version <= after:
            state = "applied now"
        else:
            state = "pending"
        states.append(MigrationState(version=version, name=name, state=state))
    latest = max((version for version, _ in migrator.migrations()), default=0)
    return MigrationStatus(applied_version=after, latest_version=latest, migrations=tuple(states))


class _OpeningStore:
    """What ``open_store`` returns: await it for a store, or use it with ``async with``."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self._url = url
        self._options = options
        self._store: RunStateStore | None = None

    async def _open(self) -> RunStateStore:
        parsed = parse_store_url(self._url)
        return await _scheme_of(parsed).open(parsed, dict(self._options))

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
