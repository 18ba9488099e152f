"""The engine's private helpers: per-run locks and a bounded cache of projected states."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from ..types import RunEventPersisted, RunMetadata
from .projector import RunState, advance
from .upcasting import UpcasterRegistry


class RunLocks:
    """One asyncio lock per run id, dropped as soon as nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, run_id: str) -> AsyncIterator[None]:
        """Serialize the commands of this engine on one run."""
        lock, users = self._locks.get(run_id, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[run_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
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

    def fold(self, events: Iterable[RunEventPersisted], upcasters: UpcasterRegistry) -> None:
        """Fold the events after the cached seq into the cached state; skip older ones."""
        # Another task may have advanced the entry while our read was in flight.
        fresh = [event for event in events if event.seq > self.state.last_seq]
        if fresh:
            self.state = advance(self.metadata, self.state, fresh, upcasters=upcasters)
            self.event_ids.update(event.event_id for event in fresh)


class StateCache:
    """A least-recently-used map of run id to ``CachedRun``; size 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, CachedRun] = OrderedDict()
        self._generation = -1

    def get(self, run_id: str, generation: int) -> CachedRun | None:
        """Return the entry for ``run_id`` if it was built with this upcaster generation."""
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
        self._entries[run_id] = entry
        self._entries.move_to_end(run_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
