"""SQLite connections: the store's options, the database file, errors, and time values.

Private to ``runstate.adapters.sqlite``. Every function here runs on the thread that owns the
connection it makes or uses; none touches the event loop.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ..._open import refuse_unknown_options
from ..._url import StoreUrl
from ..._validation import DEFAULT_MAX_PAYLOAD_BYTES, check_max_payload_bytes
from ...errors import InvalidInput, StoreUnavailable
from ._queries import Q

SYNCHRONOUS_MODES = ("FULL", "NORMAL")
DEFAULT_BUSY_TIMEOUT = 5.0
SUPPORTED_OPTIONS = ("busy_timeout", "max_payload_bytes", "synchronous")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Errors that may pass when retried: contention, I/O trouble, a full disk.
_RETRYABLE_ERRORS = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL"}


def to_us(value: datetime) -> int:
    """Return an aware datetime as integer microseconds since the Unix epoch."""
    return (value - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    """Return integer microseconds since the Unix epoch as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=value)


@dataclass(frozen=True, kw_only=True, slots=True)
class SQLiteOptions:
    """Validated options of one SQLite store."""

    path: str
    synchronous: str = "FULL"
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES


def path_from_url(url: StoreUrl) -> str:
    """Return the absolute database path of a ``sqlite:///...`` URL."""
    parts = urlsplit(url.raw)
    if parts.netloc:
        raise InvalidInput(
            f"{url.masked!r} names a host; SQLite URLs look like sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db",
            field="url",
        )
    # The path after "sqlite:///": "./x.db" and "tmp/x.db" are relative, "/tmp/x.db" absolute.
    raw = unquote(parts.path)[1:]
    if "\x00" in raw:
        raise InvalidInput(
            f"{url.masked!r}: the database path must not contain NUL (%00)", field="url"
        )
    if raw in ("", ":memory:") or raw.startswith(":memory:") or "mode=memory" in url.raw:
        raise InvalidInput(
            f"{url.masked!r} is not a database file path; an in-memory SQLite database cannot "
            "be shared between connections, so use memory:// for a store in memory",
            field="url",
        )
    if raw.startswith("file:"):
        raise InvalidInput(
            f"{url.masked!r}: SQLite URI filenames are not supported; give a path, "
            "as in sqlite:///relative/path.db or sqlite:////absolute/path.db",
            field="url",
        )
    return os.path.abspath(raw)


def parse_options(url: StoreUrl, options: Mapping[str, Any]) -> SQLiteOptions:
    """Merge URL query options and keyword options (keywords win) and validate them."""
    path = path_from_url(url)
    merged: dict[str, Any] = dict(url.query)
    merged.update(options)
    refuse_unknown_options(url, merged, set(SUPPORTED_OPTIONS))
    synchronous = merged.get("synchronous", "FULL")
    if not isinstance(synchronous, str) or synchronous.upper() not in SYNCHRONOUS_MODES:
        raise InvalidInput(
            f"must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}",
            field="synchronous",
        )
    busy_timeout = _number(merged.get("busy_timeout", DEFAULT_BUSY_TIMEOUT), "busy_timeout")
    max_payload = merged.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES)
    if isinstance(max_payload, str) and max_payload.isascii() and max_payload.isdigit():
        max_payload = int(max_payload)
    return SQLiteOptions(
        path=path,
        synchronous=synchronous.upper(),
        busy_timeout=busy_timeout,
        max_payload_bytes=check_max_payload_bytes(max_payload),
    )


def _number(value: object, field: str) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"must be a number of seconds, got {value!r}", field=field)
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"must be a non-negative number of seconds, got {value!r}", field=field)
    return float(value)


def translate_error(exc: sqlite3.Error, path: str) -> Exception:
    """Turn a driver error into ``StoreUnavailable`` or ``InvalidInput`` naming the database."""
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if name == "SQLITE_NOTADB":
        return InvalidInput(f"{path} is not a SQLite database ({exc})", field="url")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreUnavailable(
            f"SQLite database {path} is locked by another connection past the busy timeout "
            f"({exc}); retry, or raise busy_timeout",
            retryable=True,
        )
    retryable = any(name == code or name.startswith(code + "_") for code in _RETRYABLE_ERRORS)
    return StoreUnavailable(f"SQLite database {path}: {exc} ({name})", retryable=retryable)


def prepare_file(path: str) -> None:
    """Create the database file (mode 0600) and its folder if missing; refuse non-files."""
    if os.path.isdir(path):
        raise InvalidInput(f"{path} is a directory, not a SQLite database file", field="url")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot create the folder of SQLite database {path}: {exc.strerror or exc}",
            retryable=False,
        ) from exc
    try:
        # O_EXCL: never change the mode of a file someone else made; SQLite gives the
        # -wal and -shm files the database file's permissions.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot create SQLite database {path}: {exc.strerror or exc}", retryable=False
        ) from exc
    os.close(fd)


def connect(options: SQLiteOptions, *, shared: bool = False) -> sqlite3.Connection:
    """Open a configured connection in autocommit mode.

    The caller's thread owns it, unless ``shared``: then any thread may use it, one at a time
    (the synchronous store's write connection, serialized by its group commit).
    """
    path = options.path
    prepare_file(path)
    if not os.access(path, os.R_OK | os.W_OK):
        raise StoreUnavailable(
            f"SQLite database {path} is not readable and writable by this process",
            retryable=False,
        )
    try:
        # mode=rw: the file exists now; SQLite must never create one with default permissions.
        connection = sqlite3.connect(
            f"file:{quote(path)}?mode=rw",
            uri=True,
            timeout=options.busy_timeout,
            isolation_level=None,
            cached_statements=256,
            check_same_thread=not shared,
        )
    except sqlite3.Error as exc:
        raise translate_error(exc, path) from exc
    try:
        # Only switch when needed: switching takes a lock, reading the mode does not.
        mode = connection.execute(Q["journal_mode"]).fetchone()[0]
        if mode != "wal":
            mode = connection.execute(Q["use_wal"]).fetchone()[0]
        if mode != "wal":
            connection.close()
            raise StoreUnavailable(
                f"SQLite database {path} cannot use WAL mode (it stays in {mode!r}); "
                "put it on a local file system",
                retryable=False,
            )
        # PRAGMA values cannot be bound: one named statement per mode of SYNCHRONOUS_MODES.
        connection.execute(Q[f"synchronous_{options.synchronous.lower()}"])
        connection.execute(Q["foreign_keys_on"])
    except sqlite3.Error as exc:
        connection.close()
        raise translate_error(exc, path) from exc
    except BaseException:
        connection.close()
        raise
    return connection
