"""Schema administration for the CLI: which migrations a store has, and applying them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._migrations import latest_version, load_migrations
from ._url import parse_store_url
from .errors import InvalidInput


@dataclass(frozen=True, kw_only=True, slots=True)
class MigrationState:
    """One packaged migration and whether the store has it."""

    version: int
    name: str
    state: str  # "applied", "pending" or "applied now"


@dataclass(frozen=True, kw_only=True, slots=True)
class MigrationStatus:
    """A store's schema version next to the newest one this runstate ships."""

    applied_version: int
    latest_version: int
    migrations: tuple[MigrationState, ...]


async def migration_status(url: str, *, apply: bool) -> MigrationStatus:
    """Report (and with ``apply``, bring up to date) the schema of the store at ``url``."""
    parsed = parse_store_url(url)
    if parsed.scheme == "memory":
        return MigrationStatus(applied_version=0, latest_version=0, migrations=())
    if parsed.scheme == "sqlite":
        from .adapters import sqlite

        before = await sqlite.applied_version(parsed)
        after = (await sqlite.migrate(parsed))[1] if apply else before
        return _status("sqlite", before, after)
    if parsed.scheme in {"postgresql", "postgres"}:
        before, after = await _postgres(parsed, apply)
        return _status("postgres", before, after)
    raise InvalidInput(f"no migrations for {parsed.masked!r}", field="url")


async def _postgres(parsed: Any, apply: bool) -> tuple[int, int]:
    import asyncpg

    from .adapters.postgres import _migrate, parse_config
    from .adapters.postgres._errors import translated

    config = parse_config(parsed, {})
    with translated(config.raw_url, "connecting"):
        connection = await asyncpg.connect(config.dsn, timeout=config.connect_timeout)
    try:
        with translated(config.raw_url, "migrating"):
            before = await _migrate.applied_version(connection, config.schema)
            if apply:
                await _migrate.migrate(connection, config.schema)
            after = await _migrate.applied_version(connection, config.schema)
    finally:
        await connection.close()
    return before, after


def _status(dialect: str, before: int, after: int) -> MigrationStatus:
    states = []
    for migration in load_migrations(dialect):
        if migration.version <= before:
            state = "applied"
        elif migration.version <= after:
            state = "applied now"
        else:
            state = "pending"
        states.append(MigrationState(version=migration.version, name=migration.name, state=state))
    return MigrationStatus(
        applied_version=after, latest_version=latest_version(dialect), migrations=tuple(states)
    )
