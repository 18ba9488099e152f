"""The thread that owns a SQLite connection, and group commit of the writes it runs.

Private to ``runstate.adapters.sqlite``. ``ConnectionThread.call`` and ``.write`` hand a job to
the thread and await its result; everything else runs on the thread itself. ``write_group``,
one shared transaction with a savepoint per call, is also what the synchronous store's
calling threads run (``_callers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._base import copy_error
from ._connect import SQLiteOptions, connect, translate_error
from ._queries import Q

T = TypeVar("T")

#: The most write calls one group commit takes from the queue.
MAX_GROUP = 64
_BEGIN_WRITE = Q["begin_write"]
_COMMIT = Q["commit"]
_SAVEPOINT = Q["savepoint"]
_ROLLBACK_TO_SAVEPOINT = Q["rollback_to_savepoint"]
_RELEASE_SAVEPOINT = Q["release_savepoint"]


def transaction(connection: sqlite3.Connection, function: Callable[..., T], *args: Any) -> T:
    """Run ``function(connection, *args)`` as one ``BEGIN IMMEDIATE ... COMMIT`` transaction."""
    connection.execute(_BEGIN_WRITE)
    try:
        result = function(connection, *args)
        connection.execute(_COMMIT)
    except BaseException:
        rollback(connection)
        raise
    return result


def rollback(connection: sqlite3.Connection) -> None:
    """Roll back the connection's open transaction, if any, ignoring a failure to do so."""
    if connection.in_transaction:
        # A failed rollback says less than the error that led to it.
        with contextlib.suppress(sqlite3.Error):
            connection.execute(Q["rollback"])


# Job kinds: a plain call, a write transaction that may share a group commit, the end.
_CALL: Any = object()
_WRITE: Any = object()
_STOP: Any = object()

Outcome = tuple[bool, Any]
#: A write job: ``function(connection, *args)`` runs inside the write transaction.
Job = tuple[Callable[..., Any], tuple[Any, ...]]


def failure(exc: BaseException, path: str) -> Outcome:
    """The outcome of a failed call: driver errors translated, anything else as raised."""
    # Drop the failed call's locals now: a cursor kept alive by the traceback keeps its
    # statement, and with it a read snapshot, open until garbage collection.
    traceback.clear_frames(exc.__traceback__)
    if isinstance(exc, sqlite3.Error):
        error = translate_error(exc, path)
        error.__cause__ = exc
        return (False, error)
    return (False, exc)


def attempt(
    connection: sqlite3.Connection, function: Callable[..., Any], args: tuple[Any, ...], path: str
) -> Outcome:
    """Run ``function(connection, *args)`` and return its outcome instead of raising."""
    try:
        return (True, function(connection, *args))
    except BaseException as exc:
        return failure(exc, path)


def write_group(connection: sqlite3.Connection, jobs: Sequence[Job], path: str) -> list[Outcome]:
    """Run write jobs in one ``BEGIN IMMEDIATE ... COMMIT``, each inside its own savepoint.

    A job that fails rolls back to its savepoint alone. Nothing is returned before the shared
    commit, so every job stays atomic and durable on return; when the transaction itself is
    lost, every job fails, each with its own copy of the error.
    """
    if len(jobs) == 1:
        function, args = jobs[0]
        return [attempt(connection, transaction, (function, *args), path)]
    outcomes: list[Outcome] = []
    try:
        connection.execute(_BEGIN_WRITE)
        for function, args in jobs:
            connection.execute(_SAVEPOINT)
            outcome = attempt(connection, function, args, path)
            if not connection.in_transaction:
                # SQLite rolled the whole transaction back (I/O error, full disk).
                raise outcome[1] if not outcome[0] else RuntimeError("transaction lost")
            if not outcome[0]:
                connection.execute(_ROLLBACK_TO_SAVEPOINT)
            connection.execute(_RELEASE_SAVEPOINT)
            outcomes.append(outcome)
        connection.execute(_COMMIT)
    except BaseException as exc:
        rollback(connection)
        ok, error = failure(exc, path)
        # Nothing of the group was written: every call fails, each with its own error.
        return [(ok, copy_error(error)) for _ in jobs]
    return outcomes


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


class ConnectionThread:
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
                outcome = self._attempt(function, args)
                if not outcome[0] and self._connection is not None:
                    # A failed call must leave no transaction open: a reader inside one keeps
                    # its snapshot and misses every later commit.
                    rollback(self._connection)
                _deliver(loop, future, outcome)
                del outcome
            # Drop references now: a finished call's arguments must not outlive it.
            del job, function, args, loop, future

    def _connect(self) -> sqlite3.Connection:
        connection = self._connection
        if connection is None:
            connection = self._connection = connect(self._options)
        return connection

    def _attempt(self, function: Callable[..., Any], args: tuple[Any, ...]) -> Outcome:
        try:
            connection = self._connect()
        except BaseException as exc:
            return failure(exc, self._options.path)
        return attempt(connection, function, args, self._options.path)

    def _write_group(self, group: list[Any]) -> list[Outcome]:
        try:
            connection = self._connect()
        except BaseException as exc:
            ok, error = failure(exc, self._options.path)
            return [(ok, copy_error(error)) for _ in group]
        jobs = [(function, args) for _, function, args, _, _ in group]
        return write_group(connection, jobs, self._options.path)

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
