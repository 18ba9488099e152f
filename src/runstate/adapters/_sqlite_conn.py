"""SQLite plumbing: options, the database path, connections, errors, migrations, worker threads.

Private to ``runstate.adapters.sqlite``; nothing here touches the event loop except
``Worker.call``, which hands a job to the worker's own thread and awaits its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from .._migrations import latest_version, pending_migrations
from .._url import StoreUrl
from .._validation import DEFAULT_MAX_PAYLOAD_BYTES, check_max_payload_bytes
from ..errors import InvalidInput, StoreUnavailable

T = TypeVar("T")

DIALECT = "sqlite"
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
    unknown = sorted(set(merged) - set(SUPPORTED_OPTIONS))
    if unknown:
        raise InvalidInput(
            f"unknown option(s) {', '.join(unknown)} for sqlite:// "
            f"(supported: {', '.join(SUPPORTED_OPTIONS)})",
            field="options",
        )
    synchronous = merged.get("synchronous", "FULL")
    if not isinstance(synchronous, str) or synchronous.upper() not in SYNCHRONOUS_MODES:
        raise InvalidInput(
            f"must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}",
            field="synchronous",
        )
    busy_timeout = _number(merged.get("busy_timeout", DEFAULT_BUSY_TIMEOUT), "busy_timeout")
    max_payload = merged.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES)
    if isinstance(max_payload, str) and max_payload.isdigit():
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


def connect(options: SQLiteOptions) -> sqlite3.Connection:
    """Open a configured connection in autocommit mode; the caller's thread owns it."""
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
        )
    except sqlite3.Error as exc:
        raise translate_error(exc, path) from exc
    try:
        # Only switch when needed: switching takes a lock, reading the mode does not.
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            connection.close()
            raise StoreUnavailable(
                f"SQLite database {path} cannot use WAL mode (it stays in {mode!r}); "
                "put it on a local file system",
                retryable=False,
            )
        # PRAGMA values cannot be bound; this one is checked against SYNCHRONOUS_MODES.
        connection.execute(f"PRAGMA synchronous={options.synchronous}")
        connection.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        connection.close()
        raise translate_error(exc, path) from exc
    except BaseException:
        connection.close()
        raise
    return connection


# -- migrations ---------------------------------------------------------------------------


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
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runstate_schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = connection.execute("SELECT max(version) FROM runstate_schema_version").fetchone()
    return int(row[0] or 0)


def migrate_connection(connection: sqlite3.Connection, path: str) -> tuple[int, int]:
    """Apply pending migrations in one transaction; return the versions before and after."""
    latest = latest_version(DIALECT)
    before = applied_version_of(connection)
    if before == latest:
        return before, before
    connection.execute("BEGIN IMMEDIATE")
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
                "INSERT INTO runstate_schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, to_us(datetime.now(UTC))),
            )
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return before, max(before, latest)


# -- transactions and worker threads ----------------------------------------------------------

#: The most write calls one group commit takes from the queue.
MAX_GROUP = 64


def transaction(connection: sqlite3.Connection, function: Callable[..., T], *args: Any) -> T:
    """Run ``function(connection, *args)`` as one ``BEGIN IMMEDIATE ... COMMIT`` transaction."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = function(connection, *args)
        connection.execute("COMMIT")
    except BaseException:
        _rollback(connection)
        raise
    return result


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        # A failed rollback says less than the error that led to it.
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


# Job kinds: a plain call, a write transaction that may share a group commit, the end.
_CALL: Any = object()
_WRITE: Any = object()
_STOP: Any = object()

Outcome = tuple[bool, Any]


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the awaiting task was cancelled
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _deliver(loop: asyncio.AbstractEventLoop | None, future: Any, outcome: Outcome) -> None:
    if loop is not None:
        # RuntimeError: the loop is closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, future, *outcome)


def _resolve_all(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        _resolve(future, ok, value)


def _deliver_group(group: list[Any], outcomes: list[Outcome]) -> None:
    # One wake-up per event loop for the whole group, not one per call: each wake-up is a
    # write to the loop's self-pipe, and a loop woken early fights this thread for the GIL.
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for (_, _, _, loop, future), (ok, value) in zip(group, outcomes, strict=True):
        if loop is not None:
            by_loop.setdefault(loop, []).append((future, ok, value))
    for loop, results in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve_all, results)


class Worker:
    """One thread owning one SQLite connection; jobs run on it one at a time, in order.

    A job is a whole transaction, so a call costs one thread hop however many statements
    it runs. Results come back through ``call_soon_threadsafe`` straight into an asyncio
    future, without a ``concurrent.futures`` future in between.

    Group commit: write calls that queue up while a transaction runs are taken together, up
    to ``MAX_GROUP``, into one ``BEGIN IMMEDIATE ... COMMIT``, each call inside its own
    savepoint. A call that fails rolls back to its savepoint alone; every call's result is
    delivered only after the shared commit, so each call stays atomic and durable on return,
    and concurrent writers share one fsync instead of paying one each.
    """

    def __init__(self, options: SQLiteOptions, name: str) -> None:
        self._options = options
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._connection: sqlite3.Connection | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        jobs = self._jobs
        held: Any = None
        while True:
            job = held if held is not None else jobs.get()
            held = None
            kind, function, args, loop, future = job
            if kind is _STOP:
                self._close()
                _deliver(loop, future, (True, None))
                return
            if kind is _WRITE:
                group = [job]
                while len(group) < MAX_GROUP:
                    try:
                        following = jobs.get_nowait()
                    except queue.Empty:
                        break
                    if following[0] is not _WRITE:
                        held = following
                        break
                    group.append(following)
                _deliver_group(group, self._write_group(group))
                del group
            else:
                _deliver(loop, future, self._attempt(function, args))
            # Drop references now: a finished call's arguments must not outlive it.
            del job, function, args, loop, future

    def _connect(self) -> sqlite3.Connection:
        connection = self._connection
        if connection is None:
            connection = self._connection = connect(self._options)
        return connection

    def _failure(self, exc: BaseException) -> Outcome:
        if isinstance(exc, sqlite3.Error):
            error = translate_error(exc, self._options.path)
            error.__cause__ = exc
            return (False, error)
        return (False, exc)

    def _attempt(self, function: Callable[..., Any], args: tuple[Any, ...]) -> Outcome:
        try:
            return (True, function(self._connect(), *args))
        except BaseException as exc:
            return self._failure(exc)

    def _write_group(self, group: list[Any]) -> list[Outcome]:
        if len(group) == 1:
            _, function, args, _, _ = group[0]
            return [self._attempt(transaction, (function, *args))]
        outcomes: list[Outcome] = []
        try:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            for _, function, args, _, _ in group:
                connection.execute("SAVEPOINT runstate_call")
                outcome = self._attempt(function, args)
                if not connection.in_transaction:
                    # SQLite rolled the whole transaction back (I/O error, full disk).
                    raise outcome[1] if not outcome[0] else RuntimeError("transaction lost")
                if not outcome[0]:
                    connection.execute("ROLLBACK TO runstate_call")
                connection.execute("RELEASE runstate_call")
                outcomes.append(outcome)
            connection.execute("COMMIT")
        except BaseException as exc:
            if self._connection is not None:
                _rollback(self._connection)
            ok, error = self._failure(exc)
            # Nothing of the group was written: every call fails, each with its own error.
            return [(ok, _copy_error(error)) for _ in group]
        return outcomes

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(connection, *args)`` on the worker thread and return its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((_CALL, function, args, loop, future))
        return await future

    async def write(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(connection, *args)`` in a write transaction; return its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((_WRITE, function, args, loop, future))
        return await future

    async def stop(self) -> None:
        """Close the connection after the jobs queued before, and end the thread."""
        if self._stopped:
            return
        self._stopped = True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._jobs.put((_STOP, None, (), loop, future))
        await future
        # The thread returns right after resolving the future; this join is immediate.
        self._thread.join()

    def stop_now(self) -> None:
        """Ask the thread to close its connection and end, without waiting (from sync code)."""
        if not self._stopped:
            self._stopped = True
            self._jobs.put((_STOP, None, (), None, None))


def _copy_error(error: BaseException) -> BaseException:
    if isinstance(error, StoreUnavailable):
        copy = StoreUnavailable(str(error), retryable=error.retryable)
        copy.__cause__ = error.__cause__
        return copy
    return error
