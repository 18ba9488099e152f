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
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import StoreClosed, StoreUnavailable
from ._connect import SQLiteOptions, connect, translate_error
from ._writer import MAX_GROUP, CommitWake, Job, Outcome, failure, write_group

T = TypeVar("T")


class _Write:
    """One write call that waits: its job, its outcome once known, the lock its thread waits on."""

    __slots__ = ("job", "outcome", "ready")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.outcome: Outcome | None = None
        self.ready = threading.Lock()
        self.ready.acquire()


#: The longest a new leader waits for writers that met the last commit to join the next one.
MAX_LINGER = 0.001
#: ... and never longer than this share of a recent commit's duration.
LINGER_SHARE = 0.5


class GroupCommit:
    """Leader/follower group commit on the calling threads.

    A caller that finds no commit in progress leads: it runs its own write with every write
    waiting (up to ``MAX_GROUP``, in call order) in one transaction with ``run``, hands each
    other writer its outcome, and passes the lead to the first write that arrived meanwhile,
    which does the same. A caller that finds a commit in progress waits for the next one.
    So a lone writer pays no hand-off, and writers that meet share one commit (one fsync),
    each keeping its own outcome.

    When the last commit was shared, a new leader first waits a moment (at most
    ``MAX_LINGER``, and ``LINGER_SHARE`` of a recent commit's duration) for as many writers
    to join as shared it: writers released together by a commit come back one by one (they
    take turns holding the GIL), and without the wait the first of them would commit alone
    while the others queue behind it.
    """

    def __init__(self, run: Callable[[list[Job]], list[Outcome]]) -> None:
        self._run = run
        self._mutex = threading.Lock()
        self._idle = threading.Condition(self._mutex)
        self._arrived = threading.Condition(self._mutex)
        self._waiting: list[_Write] = []
        self._leading = False
        self._draining = 0
        self._lingering = False
        self._last_group = 1
        self._commit_seconds = 0.0

    def submit(self, job: Job) -> Any:
        """Run ``job`` in a group-committed write transaction; return its result or raise."""
        write: _Write | None = None
        with self._mutex:
            if self._leading:
                write = _Write(job)
                self._waiting.append(write)
                if self._lingering and len(self._waiting) + 1 >= self._last_group:
                    self._arrived.notify()
            else:
                self._leading = True
                if self._last_group > 1:
                    self._linger()
                group = self._waiting[: MAX_GROUP - 1]
                del self._waiting[: MAX_GROUP - 1]
        if write is None:
            ok, value = self._lead_with(job, group)
        else:
            write.ready.acquire()  # released with our outcome, or to make us lead
            if write.outcome is None:
                self._lead(write)
            assert write.outcome is not None
            ok, value = write.outcome
        if ok:
            return value
        raise value

    def _linger(self) -> None:
        """Wait (holding the mutex's condition) for the writers of the last commit."""
        expected = self._last_group
        self._lingering = True
        try:
            self._arrived.wait_for(
                lambda: len(self._waiting) + 1 >= expected,
                min(MAX_LINGER, self._commit_seconds * LINGER_SHARE),
            )
        finally:
            self._lingering = False

    def _commit(self, jobs: list[Job]) -> list[Outcome]:
        started = time.perf_counter()
        outcomes = self._run(jobs)
        elapsed = time.perf_counter() - started
        # A moving average: one slow commit (a checkpoint) must not set the wait alone.
        self._commit_seconds += (elapsed - self._commit_seconds) / 8
        self._last_group = len(jobs)
        return outcomes

    def _lead_with(self, job: Job, group: list[_Write]) -> Outcome:
        """Commit our own write with the ``group`` that waited, then pass the lead on."""
        outcomes: list[Outcome] = []
        try:
            outcomes = self._commit([job, *(write.job for write in group)])
            return outcomes[0]
        finally:
            _finish(group, outcomes[1:], None)
            self._pass_lead()

    def _lead(self, mine: _Write) -> None:
        """Commit groups of waiting writes until ``mine`` is done, then pass the lead on."""
        try:
            while mine.outcome is None:
                with self._mutex:
                    group = self._waiting[:MAX_GROUP]
                    del self._waiting[:MAX_GROUP]
                outcomes: list[Outcome] = []
                try:
                    outcomes = self._commit([write.job for write in group])
                finally:
                    _finish(group, outcomes, mine)
        finally:
            self._pass_lead()

    def _pass_lead(self) -> None:
        with self._mutex:
            if self._waiting:
                self._waiting[0].ready.release()
            else:
                self._leading = False
                if self._draining:
                    self._idle.notify_all()

    def drain(self) -> None:
        """Wait until no commit runs and no write waits."""
        with self._mutex:
            self._draining += 1
            try:
                while self._leading:
                    self._idle.wait()
            finally:
                self._draining -= 1


def _finish(group: list[_Write], outcomes: list[Outcome], mine: _Write | None) -> None:
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
    in a group-committed write transaction on the store's write connection. ``on_commit``
    runs on the leading thread after each committed group (see ``CommitWake``).
    ``write_first`` is ``write`` and ``call_first`` is ``call``: callers queue only for a
    commit in progress, so there is no queue to go ahead of.
    """

    def __init__(
        self,
        options: SQLiteOptions,
        name: str,
        *,
        on_commit: CommitWake | None = None,
    ) -> None:
        self._options = options
        self.name = name
        self._on_commit = on_commit
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

    def write_first(self, function: Callable[..., T], *args: Any) -> T:
        """``write``, under the name the async store's outbox bookkeeping uses."""
        return self.write(function, *args)

    def call_first(self, function: Callable[..., T], *args: Any) -> T:
        """``call``, under the name the async store's outbox waits use."""
        return self.call(function, *args)

    def _write_jobs(self, jobs: list[Job]) -> list[Outcome]:
        """Run one group of write jobs in one transaction (on the leading thread)."""
        if self._stopped:
            return [(False, StoreClosed()) for _ in jobs]
        try:
            if self._write_connection is None:
                self._write_connection = connect(self._options, shared=True)
        except BaseException as exc:
            return [failure(exc, self._options.path) for _ in jobs]
        outcomes = write_group(self._write_connection, jobs, self._options.path)
        if self._on_commit is not None:
            self._on_commit.after((job[0] for job in jobs), outcomes)
        return outcomes

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
