"""Rows in and out of the PostgreSQL write functions: event arrays, and results from rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from ..._validation import CheckedEvent
from ...types import AppendResult, new_append_result
from .._common import persisted_event


def event_arrays(
    events: list[CheckedEvent],
) -> tuple[list[str], list[str], list[str], list[int], list[datetime | None]]:
    """The batch functions' per-event arrays: ids, types, payloads, versions, occurred_at."""
    return (
        [item.event.event_id for item in events],
        [item.event.type for item in events],
        [item.payload_json for item in events],
        [item.event.schema_version for item in events],
        [item.event.occurred_at for item in events],
    )


def first_occurrences(events: list[CheckedEvent]) -> list[int]:
    """Indexes (0-based, in call order) of the first event with each event id."""
    seen: set[str] = set()
    firsts: list[int] = []
    for index, item in enumerate(events):
        event_id = item.event.event_id
        if event_id not in seen:
            seen.add(event_id)
            firsts.append(index)
    return firsts


def append_result(
    run_id: str,
    events: list[CheckedEvent],
    appended_indexes: list[int],
    positions: Sequence[int] | None,
    last_seq: int,
    recorded_at: datetime | None,
) -> AppendResult:
    """Build the result; ``appended_indexes`` are 0-based indexes into ``events``."""
    stored_positions: list[int] = list(positions or ())
    first_seq = last_seq - len(appended_indexes) + 1
    appended = []
    if appended_indexes:
        assert recorded_at is not None
        recorded = recorded_at.astimezone(UTC)
        for offset, (index, position) in enumerate(
            zip(appended_indexes, stored_positions, strict=True)
        ):
            appended.append(
                persisted_event(events[index], run_id, first_seq + offset, position, recorded)
            )
    if len(appended_indexes) == len(events):
        deduplicated: tuple[str, ...] = ()
    else:
        kept = set(appended_indexes)
        deduplicated = tuple(
            item.event.event_id for index, item in enumerate(events) if index not in kept
        )
    result: AppendResult = new_append_result(run_id, tuple(appended), deduplicated, last_seq)
    return result
