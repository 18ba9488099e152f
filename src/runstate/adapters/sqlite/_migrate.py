"""The SQLite schema: applying the packaged migrations, and ``runstate migrate`` for it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from ..._url import StoreUrl, parse_store_url
from ...errors import InvalidInput, StoreUnavailable
from .._sql import latest_version, load_migrations, pending_migrations
from ._connect import SQLiteOptions, parse_options, to_us, translate_error
from ._queries import DIALECT, Q
from ._writer import ConnectionThread, rollback


def split_statements(script: str) -> list[str]:
    """Split a SQL script into complete statements, dropping comment-only leftovers."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = "\n".join(
        line for line in buffer.splitlines() if line.strip() and not line.strip().startswith("--")
    )
    if rest:
        raise ValueError(f"incomplete SQL statement at the end of the script: {rest[:80]!r}")
    return statements


def applied_version_of(connection: sqlite3.Connection) -> int:
    """Return the schema version recorded in the database; 0 if runstate never migrated it."""
    if connection.execute(Q["has_schema_version_table"]).fetchone() is None:
        return 0
    row = connection.execute(Q["schema_version"]).fetchone()
    return int(row[0] or 0)


def migrate_connection(connection: sqlite3.Connection, path: str) -> tuple[int, int]:
    """Apply pending migrations in one transaction; return the versions before and after."""
    latest = latest_version(DIALECT)
    before = applied_version_of(connection)
    if before == latest:
        return before, before
    connection.execute(Q["begin_write"])
    try:
        # Another process may have migrated while this one waited for the write lock.
        before = applied_version_of(connection)
        if before > latest:
            raise StoreUnavailable(
                f"SQLite database {path} has runstate schema version {before}, newer than "
                f"this runstate supports ({latest}); upgrade runstate",
                retryable=False,
            )
        for migration in pending_migrations(DIALECT, before):
            for statement in split_statements(migration.sql):
                connection.execute(statement)
            connection.execute(
                Q["record_migration"],
                (migration.version, migration.name, to_us(datetime.now(UTC))),
            )
        connection.execute(Q["commit"])
    except BaseException:
        rollback(connection)
        raise
    return before, max(before, latest)


def _options_for(url: str | StoreUrl, options: Mapping[str, Any]) -> SQLiteOptions:
    parsed = url if isinstance(url, StoreUrl) else parse_store_url(url)
    if parsed.scheme != "sqlite":
        raise InvalidInput(f"not a sqlite:// URL: {parsed.masked!r}", field="url")
    return parse_options(parsed, options)


async def migrate(url: str | StoreUrl, **options: Any) -> tuple[int, int]:
    """Create or upgrade the schema of the database at ``url``; return versions before, after."""
    settings = _options_for(url, options)
    thread = ConnectionThread(settings, "runstate-sqlite-migrate")
    try:
        return await thread.call(migrate_connection, settings.path)
    finally:
        await thread.stop()


async def applied_version(url: str | StoreUrl, **options: Any) -> int:
    """Return the schema version of the database at ``url``; 0 if absent or never migrated."""
    settings = _options_for(url, options)
    return await asyncio.to_thread(_read_applied_version, settings.path)


def _read_applied_version(path: str) -> int:
    if not os.path.isfile(path):
        return 0
    try:
        connection = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise translate_error(exc, path) from exc
    try:
        return applied_version_of(connection)
    except sqlite3.Error as exc:
        raise translate_error(exc, path) from exc
    finally:
        connection.close()


class SQLiteMigrator:
    """``runstate migrate`` for ``sqlite://`` stores (a ``SchemaMigrator``)."""

    def migrations(self) -> Sequence[tuple[int, str]]:
        """The ``(version, name)`` of every packaged SQLite migration."""
        return [(m.version, m.name) for m in load_migrations(DIALECT)]

    async def applied_version(self, url: StoreUrl, options: Mapping[str, Any]) -> int:
        """Return the schema version of the database at ``url``; 0 if absent."""
        return await applied_version(url, **options)

    async def migrate(self, url: StoreUrl, options: Mapping[str, Any]) -> tuple[int, int]:
        """Create or upgrade the database's schema; return its versions before and after."""
        return await migrate(url, **options)


MIGRATOR = SQLiteMigrator()
