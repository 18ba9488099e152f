"""The run engine: creates runs through ``bootstrap_run_tx`` and drives their lifecycle.

Every command reads the run (metadata, then events), projects it, checks the transition table,
and appends with ``expected_seq`` set to the seq it read, so a command decided on a stale state
can never be written: on ``ConcurrencyConflict`` it re-reads and decides again, a bounded
number of times. Commands of one engine on one run are also serialized by a per-run lock, so
conflicts only arise between engines (processes, hosts) sharing a store.

``runstate.sync.RunEngine`` is generated from this module (``tools/async_to_sync.py``): the
same logic, blocking, with a ``threading.Lock`` per run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Mapping
from typing import Literal

from ..errors import (
    ConcurrencyConflict,
    InvalidInput,
    InvalidTransition,
    RunAlreadyExists,
    RunNotFound,
)
from ..store import RunStateStore
from ..tracing import traced_command
from ..types import (
    JSON,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    new_event_id,
    same_run_identity,
)
from ._cache import CachedRun, RunLocks, StateCache
from .lifecycle import (
    BUILTIN_SCHEMAS,
    RUN_CANCEL_REQUESTED,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_PAUSED,
    RUN_QUEUED,
    RUN_RESUMED,
    RUN_RETRY_SCHEDULED,
    RUN_STARTED,
    RUN_SUCCEEDED,
    RUN_TIMED_OUT,
    RunStatus,
    next_status,
)
from .projector import RunState, initial_state
from .upcasting import UpcasterRegistry

CreateMode = Literal["queued", "sync"]
QueuedListener = Callable[[RunState], None]

DEFAULT_MAX_CONFLICT_RETRIES = 8
DEFAULT_CACHE_SIZE = 1024


class RunEngine:
    """Creates runs and applies lifecycle commands to them, one legal transition at a time.

    ``upcasters`` is the schema-evolution registry the engine projects with (default: the
    built-in one); ``max_conflict_retries`` bounds re-reads after ``ConcurrencyConflict``;
    ``cache_size`` runs keep their projected state in memory so a command reads only the events
    after it (0 disables the cache). Share one engine within one event loop (the engine of
    ``runstate.sync``: between any number of threads).
    """

    def __init__(
        self,
        store: RunStateStore,
        *,
        upcasters: UpcasterRegistry | None = None,
        max_conflict_retries: int = DEFAULT_MAX_CONFLICT_RETRIES,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if type(max_conflict_retries) is not int or max_conflict_retries < 0:
            raise InvalidInput(
                f"must be a non-negative int, got {max_conflict_retries!r}",
                field="max_conflict_retries",
            )
        self.store = store
        self.upcasters = UpcasterRegistry() if upcasters is None else upcasters
        self.max_conflict_retries = max_conflict_retries
        self._cache = StateCache(cache_size)
        self._locks = RunLocks(asyncio.Lock)
        self._queued_listeners: list[QueuedListener] = []

    # -- reads -----------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunState | None:
        """Return the run's current state, or None if it does not exist."""
        entry = await self._load(run_id)
        return None if entry is None else entry.state

    async def _load(self, run_id: str) -> CachedRun | None:
        entry = self._cache.get(run_id, self.upcasters.generation)
        if entry is None:
            # Metadata first: it is visible before any event (docs/design.md, decision 1).
            metadata = await self.store.get_run_metadata_by_run_id(run_id)
            if metadata is None:
                return None
            entry = CachedRun(metadata=metadata, state=initial_state(metadata))
            entry.fold(await self.store.list_events(run_id), self.upcasters)
            self._cache.put(run_id, entry)
            return entry
        entry.fold(
            await self.store.list_events(run_id, after_seq=entry.state.last_seq), self.upcasters
        )
        return entry

    # -- creation ----------------------------------------------------------------------------

    @traced_command("create_run")
    async def create_run(
        self,
        metadata: RunMetadata,
        *,
        mode: CreateMode = "queued",
        idempotency_key: str | None = None,
    ) -> RunState:
        """Create a run: QUEUED (``mode="queued"``) or QUEUED then RUNNING in one transaction.

        With ``idempotency_key``, a retry of the same request (after a timeout, say) returns the
        run's current state instead of raising ``RunAlreadyExists``.
        """
        if mode not in ("queued", "sync"):
            raise InvalidInput(f"must be 'queued' or 'sync', got {mode!r}", field="mode")
        first_events = self._first_events(metadata, mode, idempotency_key)
        existing = await self._ensure_run_does_not_exist(metadata, first_events)
        if existing is not None:
            return existing
        try:
            await self.store.bootstrap_run_tx(
                RunBootstrapInput(metadata=metadata, first_events=first_events)
            )
        except RunAlreadyExists as exc:
            # The store is the last line of defence: another creator won the race after our
            # guard, or our own earlier attempt committed without us hearing back.
            if exc.same_request is False or idempotency_key is None:
                raise
            if exc.same_request is None:
                existing = await self._ensure_run_does_not_exist(metadata, first_events)
                if existing is not None:
                    return existing
        state = await self.get_run(metadata.run_id)
        if state is None:  # pragma: no cover - the bootstrap just committed
            raise RunNotFound(metadata.run_id)
        if state.status is RunStatus.QUEUED:
            for listener in list(self._queued_listeners):
                listener(state)
        return state

    async def _ensure_run_does_not_exist(
        self, metadata: RunMetadata, first_events: list[RunEventInput]
    ) -> RunState | None:
        """Raise ``RunAlreadyExists`` if the run exists; return its state if we created it."""
        entry = await self._load(metadata.run_id)
        if entry is None:
            return None
        if _same_request(entry, metadata, first_events):
            return entry.state
        raise RunAlreadyExists(metadata.run_id, same_request=False)

    def _first_events(
        self, metadata: RunMetadata, mode: CreateMode, idempotency_key: str | None
    ) -> list[RunEventInput]:
        queued_id = idempotency_key or new_event_id()
        identity: dict[str, JSON] = {
            "workflow": metadata.workflow,
            "workflow_version": metadata.workflow_version,
            "tenant_id": metadata.tenant_id,
            "parent_run_id": metadata.parent_run_id,
        }
        events = [_builtin(RUN_QUEUED, identity, queued_id)]
        if mode == "sync":
            started_id = f"{idempotency_key}:started" if idempotency_key else new_event_id()
            events.append(_builtin(RUN_STARTED, {}, started_id))
        return events

    def on_queued(self, listener: QueuedListener) -> Callable[[], None]:
        """Call ``listener(state)`` after each queued ``create_run``; returns an unsubscriber."""
        self._queued_listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._queued_listeners:
                self._queued_listeners.remove(listener)

        return unsubscribe

    # -- commands ------------------------------------------------------------------------------

    @traced_command("start")
    async def start(
        self, run_id: str, *, worker: str | None = None, idempotency_key: str | None = None
    ) -> RunState:
        """QUEUED -> RUNNING."""
        return await self._command(run_id, RUN_STARTED, {"worker": worker}, idempotency_key)

    @traced_command("pause")
    async def pause(
        self, run_id: str, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> RunState:
        """RUNNING -> PAUSED."""
        return await self._command(run_id, RUN_PAUSED, {"reason": reason}, idempotency_key)

    @traced_command("resume")
    async def resume(
        self, run_id: str, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> RunState:
        """PAUSED -> RUNNING."""
        return await self._command(run_id, RUN_RESUMED, {"reason": reason}, idempotency_key)

    @traced_command("retry")
    async def retry(
        self,
        run_id: str,
        *,
        error: JSON = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> RunState:
        """RUNNING -> QUEUED with the attempt counter raised by one."""
        payload: dict[str, JSON] = {"error": error, "reason": reason}
        return await self._command(run_id, RUN_RETRY_SCHEDULED, payload, idempotency_key)

    @traced_command("cancel")
    async def cancel(
        self, run_id: str, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> RunState:
        """Cancel: a RUNNING run is asked to stop (CANCELLING); others are cancelled at once.

        From QUEUED, PAUSED or CANCELLING this writes ``RunCancelled``; from RUNNING it writes
        ``RunCancelRequested``, and whoever executes the run then confirms with ``cancel``
        again (``RunCancelled``) or finishes it with ``succeed``/``fail``.
        """

        def decide(state: RunState) -> str:
            if state.status is RunStatus.RUNNING:
                return RUN_CANCEL_REQUESTED
            return RUN_CANCELLED

        return await self._apply(run_id, decide, _compact({"reason": reason}), idempotency_key)

    @traced_command("succeed")
    async def succeed(
        self, run_id: str, *, output: JSON = None, idempotency_key: str | None = None
    ) -> RunState:
        """RUNNING or CANCELLING -> SUCCEEDED, keeping ``output``."""
        return await self._command(run_id, RUN_SUCCEEDED, {"output": output}, idempotency_key)

    @traced_command("fail")
    async def fail(
        self, run_id: str, *, error: JSON = None, idempotency_key: str | None = None
    ) -> RunState:
        """QUEUED, RUNNING or CANCELLING -> FAILED, keeping ``error``."""
        return await self._command(run_id, RUN_FAILED, {"error": error}, idempotency_key)

    @traced_command("time_out")
    async def time_out(
        self,
        run_id: str,
        *,
        reason: str | None = None,
        error: JSON = None,
        idempotency_key: str | None = None,
    ) -> RunState:
        """QUEUED, RUNNING or PAUSED -> TIMED_OUT."""
        payload: dict[str, JSON] = {"reason": reason, "error": error}
        return await self._command(run_id, RUN_TIMED_OUT, payload, idempotency_key)

    @traced_command("record")
    async def record(self, run_id: str, event: RunEventInput) -> RunState:
        """Append one event: steps and custom types keep the status, lifecycle types move it.

        Step events are refused (``InvalidTransition``) on terminal runs; custom events are
        accepted even then. Built-in types are written at their current schema version; a
        custom type must be written at the version its upcasters lead to. ``event.event_id`` is
        the idempotency key: an id already in the log returns the current state unchanged.
        """
        event = self._at_current_version(event)
        return await self._apply(
            run_id, lambda _state: event.type, event.payload, event.event_id, template=event
        )

    def _at_current_version(self, event: RunEventInput) -> RunEventInput:
        if not isinstance(event, RunEventInput):
            raise InvalidInput(
                f"must be a RunEventInput, got {type(event).__name__}", field="event"
            )
        schema = BUILTIN_SCHEMAS.get(event.type)
        if schema is not None:
            if event.schema_version == schema.version:
                return event
            return dataclasses.replace(event, schema_version=schema.version)
        current = self.upcasters.current_version(event.type)
        if event.schema_version < current:
            raise InvalidInput(
                f"{event.type} is at schema version {current}; write new events at that "
                f"version (got {event.schema_version})",
                field="event.schema_version",
            )
        return event

    async def _command(
        self,
        run_id: str,
        event_type: str,
        payload: Mapping[str, JSON],
        idempotency_key: str | None,
    ) -> RunState:
        return await self._apply(
            run_id, lambda _state: event_type, _compact(payload), idempotency_key
        )

    async def _apply(
        self,
        run_id: str,
        decide: Callable[[RunState], str],
        payload: Mapping[str, JSON],
        event_id: str | None,
        *,
        template: RunEventInput | None = None,
    ) -> RunState:
        lock = self._locks.take(run_id)
        try:
            async with lock:
                conflicts = 0
                while True:
                    entry = await self._load(run_id)
                    if entry is None:
                        raise RunNotFound(run_id)
                    state = entry.state
                    if event_id is not None and event_id in entry.event_ids:
                        return state
                    event_type = decide(state)
                    if next_status(state.status, event_type) is None:
                        raise InvalidTransition(
                            run_id, from_status=state.status, event_type=event_type
                        )
                    if template is not None:
                        event = template
                    else:
                        event = _builtin(event_type, payload, event_id or new_event_id())
                    try:
                        result = await self.store.append_and_enqueue_tx(
                            run_id, [event], expected_seq=state.last_seq
                        )
                    except ConcurrencyConflict:
                        conflicts += 1
                        if conflicts > self.max_conflict_retries:
                            raise
                        # Jitter, so engines racing on one run do not collide in lockstep.
                        await asyncio.sleep(random.random() * min(0.001 * 2**conflicts, 0.05))
                        continue
                    if not result.appended:
                        # Deduplicated: the id landed between our read and write; re-read.
                        conflicts += 1
                        if conflicts > self.max_conflict_retries:
                            raise ConcurrencyConflict(
                                run_id, expected_seq=state.last_seq, actual_seq=result.last_seq
                            )
                        continue
                    # We hold the run's lock, so the entry stood at ``state``: folding our own
                    # events into it gives the state the append produced.
                    entry.fold(result.appended, self.upcasters)
                    return entry.state
        finally:
            self._locks.drop(run_id)


def _builtin(event_type: str, payload: Mapping[str, JSON], event_id: str) -> RunEventInput:
    return RunEventInput(
        type=event_type,
        payload=dict(payload),
        event_id=event_id,
        schema_version=BUILTIN_SCHEMAS[event_type].version,
    )


def _compact(payload: Mapping[str, JSON]) -> dict[str, JSON]:
    """Drop unset optional fields, so payloads carry only what the caller said."""
    return {key: value for key, value in payload.items() if value is not None}


def _same_request(
    entry: CachedRun, metadata: RunMetadata, first_events: list[RunEventInput]
) -> bool:
    """Tell whether the stored run was created by this very request (same metadata and ids)."""
    return same_run_identity(metadata, entry.metadata) and all(
        event.event_id in entry.event_ids for event in first_events
    )
