"""Logic the adapters share (PostgreSQL checks bootstrap identity inside its SQL instead)."""

from __future__ import annotations

from datetime import UTC, datetime

from .._validation import CheckedEvent
from ..types import (
    RunBootstrapInput,
    RunEventPersisted,
    RunMetadata,
    new_persisted_event,
    same_run_identity,
)


def persisted_event(
    item: CheckedEvent, run_id: str, seq: int, position: int, recorded_at: datetime
) -> RunEventPersisted:
    """The stored form of a validated event, without reading it back.

    The payload is the validation's private copy, which equals the stored JSON read back;
    ``occurred_at`` is normalized to UTC as every adapter returns it.
    """
    event = item.event
    occurred_at = event.occurred_at
    stored: RunEventPersisted = new_persisted_event(
        run_id,
        seq,
        position,
        event.type,
        item.payload,
        event.event_id,
        event.schema_version,
        None if occurred_at is None else occurred_at.astimezone(UTC),
        recorded_at,
    )
    return stored


def unique_first_event_ids(request: RunBootstrapInput) -> list[str]:
    """The ids a bootstrap stores: its first events' ids, duplicates dropped, in order."""
    return list(dict.fromkeys(event.event_id for event in request.first_events))


def is_same_bootstrap(
    request: RunBootstrapInput, stored: RunMetadata, stored_first_ids: list[str]
) -> bool:
    """Tell whether a stored run came from ``request``: same metadata and first event ids.

    ``stored_first_ids`` are the ids of the run's first stored events, as many as
    ``unique_first_event_ids(request)`` holds. A retry after an ambiguous commit matches;
    a different request for the same run id does not.
    """
    return (
        same_run_identity(request.metadata, stored)
        and unique_first_event_ids(request) == stored_first_ids
    )
