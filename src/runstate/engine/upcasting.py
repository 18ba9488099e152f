"""Option D schema evolution: upcast old event payloads on read, fill gaps from RunMetadata.

Stored events are never rewritten. Each event type has a current schema version; an event stored
at an older version is migrated on read, one version at a time, by the upcasters registered for
``(type, from_version)``. Fields the current schema takes from the run's identity (workflow,
tenant, ...) are then filled from ``RunMetadata`` when the stored payload lacks them, which is
only sound because ``bootstrap_run_tx`` makes metadata visible before any event (see
docs/design.md, "Option D").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import InvalidInput
from ..types import JSON, RunEventPersisted, RunMetadata
from .lifecycle import BUILTIN_EVENT_TYPES, BUILTIN_SCHEMAS, RUN_QUEUED, STEP_STARTED

Upcaster = Callable[[dict[str, JSON], RunMetadata], dict[str, JSON]]
"""Migrates one payload from version N to N + 1; gets a private copy it may change freely."""


def _run_queued_v1_to_v2(payload: dict[str, JSON], metadata: RunMetadata) -> dict[str, JSON]:
    # Nothing to move: the identity fields v2 added are filled from metadata after upcasting.
    return payload


def _step_started_v1_to_v2(payload: dict[str, JSON], metadata: RunMetadata) -> dict[str, JSON]:
    if "name" in payload and "step" not in payload:
        payload["step"] = payload.pop("name")
    return payload


_BUILTIN_UPCASTERS: dict[tuple[str, int], Upcaster] = {
    (RUN_QUEUED, 1): _run_queued_v1_to_v2,
    (STEP_STARTED, 1): _step_started_v1_to_v2,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Upcasted:
    """The outcome of upcasting one event: its current payload, or why that was not possible."""

    payload: Mapping[str, JSON]
    schema_version: int
    problem: str | None = None


class UpcasterRegistry:
    """Upcasters per ``(event type, from_schema_version)``; the built-in ones are preloaded.

    Register every upcaster before handing the registry to a ``RunEngine``: the engine caches
    projected states, and drops that cache when it sees the registry change.
    """

    def __init__(self) -> None:
        self._upcasters: dict[tuple[str, int], Upcaster] = dict(_BUILTIN_UPCASTERS)
        self._current: dict[str, int] = {t: s.version for t, s in BUILTIN_SCHEMAS.items()}
        self.generation = 0

    def register(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """Register ``upcaster`` to migrate ``event_type`` payloads from ``from_version``."""
        if event_type in BUILTIN_EVENT_TYPES:
            raise InvalidInput(
                f"{event_type} is a built-in event type; runstate owns its schema",
                field="event_type",
            )
        if type(from_version) is not int or from_version < 1:
            raise InvalidInput(
                f"must be a positive int, got {from_version!r}", field="from_version"
            )
        key = (event_type, from_version)
        if key in self._upcasters:
            raise InvalidInput(
                f"an upcaster for {event_type} v{from_version} is already registered",
                field="from_version",
            )
        self._upcasters[key] = upcaster
        self._current[event_type] = max(self._current.get(event_type, 1), from_version + 1)
        self.generation += 1

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator form of ``register``."""

        def decorate(function: Upcaster) -> Upcaster:
            self.register(event_type, from_version, function)
            return function

        return decorate

    def current_version(self, event_type: str) -> int:
        """Return the schema version events of ``event_type`` are upcast to (1 if never bumped)."""
        return self._current.get(event_type, 1)

    def versions(self) -> Mapping[str, int]:
        """Return the current version of every type that has a schema or an upcaster."""
        return MappingProxyType(self._current)

    def upcast_payload(self, metadata: RunMetadata, event: RunEventPersisted) -> Upcasted:
        """Migrate ``event``'s payload to its type's current version and fill it from metadata.

        Never raises for a bad stored event: a missing or failing upcaster is reported in
        ``problem`` with the payload as far as it got.
        """
        event_type = event.type
        current = self._current.get(event_type, 1)
        version = event.schema_version
        schema = BUILTIN_SCHEMAS.get(event_type)
        fill = schema.from_metadata if schema is not None else ()
        needs_fill = any(name not in event.payload for name in fill)
        if version >= current and not needs_fill:
            return Upcasted(payload=event.payload, schema_version=version)
        # A deep copy: upcasters may mutate, and stores may hand out their own objects.
        payload: dict[str, JSON] = {key: _copy_json(value) for key, value in event.payload.items()}
        problem: str | None = None
        while version < current:
            upcaster = self._upcasters.get((event_type, version))
            if upcaster is None:
                problem = f"no upcaster registered for {event_type} v{version}"
                break
            try:
                migrated = upcaster(payload, metadata)
            except Exception as exc:  # a broken upcaster must not make the run unreadable
                problem = f"upcaster for {event_type} v{version} failed: {exc!r}"
                break
            if not isinstance(migrated, dict):
                problem = f"upcaster for {event_type} v{version} returned {type(migrated).__name__}"
                break
            payload = migrated
            version += 1
        for name in fill:
            if name not in payload:
                payload[name] = getattr(metadata, name)
        return Upcasted(payload=payload, schema_version=version, problem=problem)

    def upcast(self, metadata: RunMetadata, event: RunEventPersisted) -> RunEventPersisted:
        """Return ``event`` as the current schema sees it (for consumers of stored events)."""
        result = self.upcast_payload(metadata, event)
        if result.payload is event.payload and result.schema_version == event.schema_version:
            return event
        return dataclasses.replace(
            event, payload=result.payload, schema_version=result.schema_version
        )


def _copy_json(value: JSON) -> JSON:
    # Payloads are plain JSON, so this is a deep copy at a fraction of copy.deepcopy's cost.
    if type(value) is dict:
        return {key: _copy_json(item) for key, item in value.items()}
    if type(value) is list:
        return [_copy_json(item) for item in value]
    return value
