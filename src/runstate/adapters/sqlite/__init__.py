"""The SQLite store: the embedded default, one database file shared by any number of processes.

URLs. Everything after ``sqlite:///`` is the file path, as in SQLAlchemy:

- ``sqlite:///runstate.db``, ``sqlite:///./data/runstate.db``: relative to the current
  directory when the store is opened (``sqlite:///tmp/x.db`` is therefore ``./tmp/x.db``);
- ``sqlite:////var/lib/app/runstate.db`` (four slashes): absolute;
- ``%``-escapes are decoded (``sqlite:///my%20runs.db``); a host part is refused;
- ``sqlite:///:memory:`` is refused: the store needs several connections on one database,
  so use ``memory://`` for a store in memory.

Options, as ``open_store`` keywords or URL query parameters (keywords win):
``synchronous`` (``"FULL"``, the default, or ``"NORMAL"``: faster, and a power loss may
undo the last commits but never corrupts the file), ``busy_timeout`` (seconds to wait for
another writer, default 5) and ``max_payload_bytes`` (default 1 MiB).

A missing file is created with its folder, readable by its owner only (mode 0600). The
schema is migrated on open (``migrate`` does it explicitly). The database runs in WAL mode
with foreign keys on. Each write is one ``BEGIN IMMEDIATE ... COMMIT`` transaction run whole on
the store's writer thread, which owns the write connection; reads use a second connection on
a reader thread. ``BEGIN IMMEDIATE`` takes the file's write lock first, so writers in other
processes queue (up to ``busy_timeout``) and seqs stay gapless across processes.
"""

from __future__ import annotations

from typing import Any

from ..._url import StoreUrl
from ._connect import SUPPORTED_OPTIONS, SQLiteOptions, parse_options
from ._migrate import MIGRATOR, SQLiteMigrator, applied_version, migrate
from ._store import POLL_INTERVAL, SQLiteStore

__all__ = [
    "MIGRATOR",
    "POLL_INTERVAL",
    "SUPPORTED_OPTIONS",
    "SQLiteMigrator",
    "SQLiteOptions",
    "SQLiteStore",
    "applied_version",
    "migrate",
    "open_sqlite_store",
]


async def open_sqlite_store(url: StoreUrl, options: dict[str, Any]) -> SQLiteStore:
    """Open (creating and migrating if needed) the SQLite store at ``url``; for ``open_store``."""
    return await SQLiteStore.open(parse_options(url, options))
