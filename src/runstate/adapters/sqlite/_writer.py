"""The thread that owns a SQLite connection, and group commit of the writes it runs.

Private to ``runstate.adapters.sqlite``. ``ConnectionThread.call`` and ``.write`` hand a job to
the thread and await its result; everything else runs on the thread itself. ``write_group``,
one shared transaction with a savepoint per call, is also what the synchronous store's
calling threads run (``_callers.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .._base import copy_error
from ._connect import SQLiteOptions, connect, translate_error
from ._queries import Q

T = TypeVar("T")

#: The most write calls one group commit takes from the queue.
MAX_GROUP = 64
#: How long a group in progress may keep first-lane jobs waiting before it commits early.
LANE_WAIT = 0.002
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
#: Queued after each job of the first lane, to wake a thread waiting on the queue.
_NUDGE: Any = object()

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


@dataclass(frozen=True, kw_only=True, slots=True)
class CommitWake:
    """What a writer does after a commit: ``wake`` once if the group ran one of ``functions``.

    The write functions whose commit may make outbox records claimable; ``wake`` runs on the
    writing thread, before the results are handed back, so a relay waiting on an event loop
    is not woken only once the writing task has been scheduled again.
    """

    functions: frozenset[Callable[..., Any]]
    wake: Callable[[], None]

    def after(self, functions: Iterable[Callable[..., Any]], outcomes: Iterable[Outcome]) -> None:
        """Wake if a job succeeded whose function is one of ``functions`` (pairs in order)."""
        # Not strict: a paused group has outcomes only for the jobs it ran.
        pairs = zip(functions, outcomes, strict=False)
        if any(ok and function in self.functions for function, (ok, _) in pairs):
            self.wake()


def attempt(
    connection: sqlite3.Connection, function: Callable[..., Any], args: tuple[Any, ...], path: str
) -> Outcome:
    """Run ``function(connection, *args)`` and return its outcome instead of raising."""
    try:
        return (True, function(connection, *args))
    except BaseException as exc:
        return failure(exc, path)


def write_group(
    connection: sqlite3.Connection,
    jobs: Sequence[Job],
    path: str,
    pause: Callable[[], bool] | None = None,
) -> list[Outcome]:
    """Run write jobs in one ``BEGIN IMMEDIATE ... COMMIT``, each inside its own savepoint.

    A job that fails rolls back to its savepoint alone. Nothing is returned before the shared
    commit, so every job stays atomic and durable on return; when the transaction itself is
    lost, every job fails, each with its own copy of the error. When ``pause()`` turns true
    between two jobs, the jobs run so far are committed and only their outcomes returned:
    the caller runs the others later.
    """
    if len(jobs) == 1:
        function, args = jobs[0]
        return [attempt(connection, transaction, (function, *args), path)]
    outcomes: list[Outcome] = []
    try:
        connection.execute(_BEGIN_WRITE)
        for function, args in jobs:
            if outcomes and pause is not None and pause():
                break
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

    The first lane (``write_first``, ``call_first``): its jobs run before every queued job,
    writes in a group of their own, and a group that has run ``LANE_WAIT`` commits early
    (after its current job) to let them in; the rest of the group runs next. The relay's
    outbox bookkeeping takes it: a claim or ``mark_delivered`` is one short transaction that
    unblocks a batch of deliveries, and behind a burst of engine writes it would wait for
    several full groups. The wait is bounded rather than nil so that the engine's writes
    keep sharing commits. On the reader thread, ``wait_for_outbox``'s ``PRAGMA
    data_version`` reads take it: a relay must not wait out the engine's queued reads to
    notice a commit.

    ``on_commit``: run after each committed group (see ``CommitWake``).
    """

    def __init__(
        self,
        options: SQLiteOptions,
        name: str,
        *,
        on_commit: CommitWake | None = None,
    ) -> None:
        self._options = options
        self._on_commit = on_commit
        self._group_started = 0.0
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Appended by any thread, taken by this one: deque operations are atomic.
        self._first: collections.deque[Any] = collections.deque()
        # Jobs taken from the queue but not yet run, in queue order (this thread only).
        self._held: collections.deque[Any] = collections.deque()
        self._connection: sqlite3.Connection | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            if self._first:
                if self._first[0][0] is _WRITE:
                    self._run_group(self._take_first(), pause=False)
                else:
                    self._run_call(self._first.popleft())
                continue
            job = self._held.popleft() if self._held else self._jobs.get()
            if job is _NUDGE:
                continue
            if job[0] is _STOP:
                self._close()
                _deliver(job[3], job[4], (True, None))
                return
            if job[0] is _WRITE:
                self._run_group(self._gather(job), pause=True)
            else:
                self._run_call(job)
            # Drop the reference now: a finished call's arguments must not outlive it.
            del job

    def _run_call(self, job: Any) -> None:
        _, function, args, loop, future = job
        outcome = self._attempt(function, args)
        if not outcome[0] and self._connection is not None:
            # A failed call must leave no transaction open: a reader inside one keeps
            # its snapshot and misses every later commit.
            rollback(self._connection)
        _deliver(loop, future, outcome)

    def _take_first(self) -> list[Any]:
        group: list[Any] = []
        while self._first and self._first[0][0] is _WRITE and len(group) < MAX_GROUP:
            group.append(self._first.popleft())
        return group

    def _gather(self, job: Any) -> list[Any]:
        """``job`` and the writes queued behind it, up to the first other job or lane job."""
        group = [job]
        while len(group) < MAX_GROUP and not self._first:
            if self._held:
                following = self._held.popleft()
            else:
                try:
                    following = self._jobs.get_nowait()
                except queue.Empty:
                    break
            if following is _NUDGE:
                continue  # its job is in the first lane: the loop's condition sees it
            if following[0] is not _WRITE:
                self._held.appendleft(following)
                break
            group.append(following)
        return group

    def _run_group(self, group: list[Any], *, pause: bool) -> None:
        outcomes = self._write_group(group, pause)
        done = len(outcomes)
        # Paused for the first lane: the group's other jobs run next, still in queue order.
        self._held.extendleft(reversed(group[done:]))
        if self._on_commit is not None:
            self._on_commit.after((job[1] for job in group), outcomes)
        _deliver_group(group[:done], outcomes)

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

    def _write_group(self, group: list[Any], pause: bool) -> list[Outcome]:
        try:
            connection = self._connect()
        except BaseException as exc:
            ok, error = failure(exc, self._options.path)
            return [(ok, copy_error(error)) for _ in group]
        jobs = [(function, args) for _, function, args, _, _ in group]
        self._group_started = time.monotonic()
        return write_group(
            connection, jobs, self._options.path, self._lane_waits if pause else None
        )

    def _lane_waits(self) -> bool:
        return bool(self._first) and time.monotonic() - self._group_started >= LANE_WAIT

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

    async def write_first(self, function: Callable[..., T], *args: Any) -> T:
        """Like ``write``, in the first lane: before every queued job (see the class)."""
        return await self._put_first(_WRITE, function, args)

    async def call_first(self, function: Callable[..., T], *args: Any) -> T:
        """Like ``call``, in the first lane: before every queued job (see the class)."""
        return await self._put_first(_CALL, function, args)

    async def _put_first(self, kind: Any, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._first.append((kind, function, args, loop, future))
        self._jobs.put(_NUDGE)
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
