"""The PostgreSQL adapter: an asyncpg pool, plpgsql write functions, LISTEN/NOTIFY wake-ups.

``open_store("postgresql://user@host/db?schema=runstate&pool_size=10")``. Tables live in one
schema of an existing database (default ``runstate``), created and migrated on open. Every
statement names the schema itself and connections carry no session state, so the pool may
go through pgbouncer in transaction mode (``pgbouncer=true``). While a relay waits
(``runstate_watch``), every write transaction sends one NOTIFY on channel ``runstate_outbox``
with the schema name as payload; behind a pooler, relays poll instead.

Writes are group-committed: at most ``write_statements`` statements of each kind (bootstrap,
append) run at once (default: one per 2 connections of the pool, 1 to 2), and writes that
arrive meanwhile go out together in the next one, written set-based by
``runstate_bootstrap_batch`` / ``runstate_append_batch`` (see ``_batch.py``), each with its
own outcome. A lone writer still gets one round trip per call.
"""

from __future__ import annotations

from typing import Any

from ..._url import StoreUrl
from ._config import SUPPORTED_OPTIONS, PostgresConfig, parse_config
from ._listen import NOTIFY_CHANNEL
from ._migrate import MIGRATOR, PostgresMigrator, applied_version, migrate
from ._store import PostgresStore

__all__ = [
    "MIGRATOR",
    "NOTIFY_CHANNEL",
    "SUPPORTED_OPTIONS",
    "PostgresConfig",
    "PostgresMigrator",
    "PostgresStore",
    "applied_version",
    "migrate",
    "open_postgres_store",
    "parse_config",
]


async def open_postgres_store(url: StoreUrl, options: dict[str, Any]) -> PostgresStore:
    """Open a PostgreSQL store from a parsed URL and ``open_store`` keyword options."""
    return await PostgresStore.open(parse_config(url, options))
