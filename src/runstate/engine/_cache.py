"""The engine's private helpers: per-run locks and a bounded cache of projected states.

Both engines use them: the async one with ``asyncio.Lock`` per run, the synchronous one
(``runstate.sync``, whose engine is shared between threads) with ``threading.Lock``; the
bookkeeping and the cache guard themselves with short ``threading`` locks, never held
across an ``await``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..types import RunEventPersisted, RunMetadata
from .projector import RunState, advance
from .upcasting import UpcasterRegistry

L = TypeVar("L")


class RunLocks(Generic[L]):
    """One lock per run id (made by ``factory``), dropped when nobody holds or wants it.

    ``take`` before acquiring the lock, ``drop`` after releasing it (or giving up).
    """

    def __init__(self, factory: Callable[[], L]) -> None:
        self._factory = factory
        self._locks: dict[str, tuple[L, int]] = {}
        self._guard = threading.Lock()

    def take(self, run_id: str) -> L:
        """Return the run's lock, counting the caller as one of its users."""
        with self._guard:
            lock, users = self._locks.get(run_id, (None, 0))
            if lock is None:
                lock = self._factory()
            self._locks[run_id] = (lock, users + 1)
            return lock

    def drop(self, run_id: str) -> None:
        """Stop using the run's lock; the last user forgets it."""
        with self._guard:
            lock, users = self._locks[run_id]
            if users == 1:
                del self._locks[run_id]
            else:
                self._locks[run_id] = (lock, users - 1)


@dataclass(kw_only=True, slots=True)
class CachedRun:
    """A run's metadata, its projected state and every event id of its log."""

    metadata: RunMetadata
    state: RunState
    event_ids: set[str] = field(default_factory=set)
    # Threads of a synchronous engine fold into one entry at once (reads take no run lock).
    _folding: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def fold(self, events: Iterable[RunEventPersisted], upcasters: UpcasterRegistry) -> None:
        """Fold the events after the cached seq into the cached state; skip older ones."""
        with self._folding:
            # Another caller may have advanced the entry while our read was in flight.
            fresh = [event for event in events if event.seq > self.state.last_seq]
            if fresh:
                self.event_ids.update(event.event_id for event in fresh)
                self.state = advance(self.metadata, self.state, fresh, upcasters=upcasters)


class StateCache:
    """A least-recently-used map of run id to ``CachedRun``; size 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, CachedRun] = OrderedDict()
        self._generation = -1
        self._guard = threading.Lock()

    def get(self, run_id: str, generation: int) -> CachedRun | None:
        """Return the entry for ``run_id`` if it was built with this upcaster generation."""
        with self._guard:
            if generation != self._generation:
                # States projected with other upcasters may differ: start over.
                self._entries.clear()
                self._generation = generation
                return None
            entry = self._entries.get(run_id)
            if entry is not None:
                self._entries.move_to_end(run_id)
            return entry

    def put(self, run_id: str, entry: CachedRun) -> None:
        """Keep ``entry``, evicting the least recently used one beyond the size."""
        if self._size <= 0:
            return
        with self._guard:
            self._entries[run_id] = entry
            self._entries.move_to_end(run_id)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
