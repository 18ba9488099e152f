"""The synchronous SQLite store's connections: every call runs on the thread that makes it.

Private to ``runstate.adapters.sqlite``; ``runstate.sync.SQLiteStore`` uses it where the async
store uses ``ConnectionThread`` (same methods, blocking). Reads run on a connection of the
calling thread's own. Writes are group-committed on the calling threads (``GroupCommit``):
no thread hand-off for a lone writer, one shared transaction (and fsync) for writers that
meet, each keeping its own outcome.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import StoreClosed, StoreUnavailable
from ._connect import SQLiteOptions, connect, translate_error
from ._writer import MAX_GROUP, Job, Outcome, failure, write_group

T = TypeVar("T")


class _Write:
    """One write call: its job, its outcome once known, and the lock its thread waits on."""

    __slots__ = ("job", "outcome", "promoted", "ready")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.outcome: Outcome | None = None
        self.promoted = False
        self.ready = threading.Lock()
        self.ready.acquire()


class GroupCommit:
    """Leader/follower group commit on the calling threads.

    A caller that finds no commit in progress leads: it takes the writes waiting (its own
    first, up to ``MAX_GROUP``, in call order) and runs them in one transaction with
    ``run``, hands every other writer its outcome, passes the lead to the first write still
    waiting, and returns. A caller that finds a commit in progress waits for the next one,
    run by whoever leads then (maybe itself, once promoted). So a lone writer pays no hand-off
    at all, and writers that meet share one commit, in call order.
    """

    def __init__(self, run: Callable[[list[Job]], list[Outcome]]) -> None:
        self._run = run
        self._mutex = threading.Lock()
        self._idle = threading.Condition(self._mutex)
        self._waiting: list[_Write] = []
        self._leading = False

    def submit(self, job: Job) -> Any:
        """Run ``job`` in a group-committed write transaction; return its result or raise."""
        write = _Write(job)
        with self._mutex:
            self._waiting.append(write)
            lead = not self._leading
            self._leading = True
        if not lead:
            write.ready.acquire()  # released with our outcome, or to make us lead
        if write.outcome is None:
            self._lead(write)
        assert write.outcome is not None
        ok, value = write.outcome
        if ok:
            return value
        raise value

    def _lead(self, mine: _Write) -> None:
        """Commit groups until ``mine`` is done, then pass the lead on."""
        try:
            while mine.outcome is None:
                with self._mutex:
                    group = self._waiting[:MAX_GROUP]
                    del self._waiting[:MAX_GROUP]
                outcomes: list[Outcome] = []
                try:
                    outcomes = self._run([write.job for write in group])
                finally:
                    _finish(group, outcomes, mine)
        finally:
            with self._mutex:
                if self._waiting:
                    following = self._waiting[0]
                    following.promoted = True
                    following.ready.release()
                else:
                    self._leading = False
                    self._idle.notify_all()

    def drain(self) -> None:
        """Wait until no commit runs and no write waits."""
        with self._mutex:
            while self._leading:
                self._idle.wait()


def _finish(group: list[_Write], outcomes: list[Outcome], mine: _Write) -> None:
    """Give every write of a committed group its outcome; wake the threads waiting for one."""
    for index, write in enumerate(group):
        if index < len(outcomes):
            write.outcome = outcomes[index]
        else:  # the leader was interrupted (KeyboardInterrupt) before the outcomes came
            write.outcome = (False, StoreUnavailable("the group commit was interrupted"))
        if write is not mine:
            write.ready.release()


class _Reader:
    """One thread's read connection; closed with the thread (or the store)."""

    __slots__ = ("__weakref__", "connection")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection


class CallerConnections:
    """The connections of one synchronous SQLite store, used by the threads that call it.

    ``call`` runs a function on the calling thread's own connection (so a thread's reads
    share one snapshot history, as ``PRAGMA data_version`` polling needs); ``write`` runs it
    in a group-committed write transaction on the store's write connection.
    """

    def __init__(self, options: SQLiteOptions, name: str) -> None:
        self._options = options
        self.name = name
        self._local = threading.local()
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._write_connection: sqlite3.Connection | None = None
        self._group = GroupCommit(self._write_jobs)
        self._stopped = False

    def _reader(self) -> sqlite3.Connection:
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            if self._stopped:
                raise StoreClosed()
            reader = self._local.reader = _Reader(connect(self._options, shared=True))
            self._readers.add(reader)
        return reader.connection

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(connection, *args)`` on the calling thread's connection."""
        connection = self._reader()
        try:
            return function(connection, *args)
        except sqlite3.Error as exc:
            raise translate_error(exc, self._options.path) from exc

    def write(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(connection, *args)`` in a write transaction; return its result."""
        result: T = self._group.submit((function, args))
        return result

    def _write_jobs(self, jobs: list[Job]) -> list[Outcome]:
        """Run one group of write jobs in one transaction (on the leading thread)."""
        if self._stopped:
            return [(False, StoreClosed()) for _ in jobs]
        try:
            if self._write_connection is None:
                self._write_connection = connect(self._options, shared=True)
        except BaseException as exc:
            return [failure(exc, self._options.path) for _ in jobs]
        return write_group(self._write_connection, jobs, self._options.path)

    def stop(self) -> None:
        """Let the writes in progress commit, then close every connection."""
        self._group.drain()
        self.stop_now()

    def stop_now(self) -> None:
        """Close every connection now (a store dropped unclosed: nobody is using it)."""
        self._stopped = True
        connection, self._write_connection = self._write_connection, None
        if connection is not None:
            connection.close()
        for reader in list(self._readers):
            reader.connection.close()
