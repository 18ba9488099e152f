"""Rows in and out of PostgreSQL: the write functions' arrays and results, and values from
the rows of the reads (events, metadata, run summaries, outbox records and stats, the feed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..._validation import CheckedEvent
from ...errors import InvalidInput
from ...types import (
    AppendResult,
    FeedPage,
    OutboxRecord,
    OutboxStats,
    RunEventPersisted,
    RunMetadata,
    RunSummary,
    new_append_result,
)
from .._base import persisted_event


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


def event_from_row(row: Mapping[str, Any]) -> RunEventPersisted:
    """Build a stored event from a row of ``run_events`` columns."""
    occurred_at = row["occurred_at"]
    return RunEventPersisted(
        run_id=row["run_id"],
        seq=row["seq"],
        position=row["position"],
        type=row["type"],
        payload=row["payload"],
        event_id=row["event_id"],
        schema_version=row["schema_version"],
        occurred_at=None if occurred_at is None else occurred_at.astimezone(UTC),
        recorded_at=row["recorded_at"].astimezone(UTC),
    )


def record_from_row(row: Mapping[str, Any]) -> OutboxRecord:
    """Build a claimed outbox record from a row of the ``claim`` query."""
    expires = row["lease_expires_at"]
    return OutboxRecord(
        outbox_id=row["outbox_id"],
        event=event_from_row(row),
        workflow=row["workflow"],
        attempts=row["attempts"],
        lease_owner=row["lease_owner"],
        lease_expires_at=None if expires is None else expires.astimezone(UTC),
    )


def stats_from_row(row: Mapping[str, Any]) -> OutboxStats:
    """Build the outbox summary from the row of the ``stats`` query."""
    oldest = row["oldest_pending_at"]
    return OutboxStats(
        pending=row["pending"],
        in_flight=row["in_flight"],
        dead=row["dead"],
        delivered=row["delivered"],
        oldest_pending_at=None if oldest is None else oldest.astimezone(UTC),
    )


def metadata_from_row(row: Mapping[str, Any]) -> RunMetadata:
    """Build run metadata from a row of ``run_metadata`` columns."""
    return RunMetadata(
        run_id=row["run_id"],
        workflow=row["workflow"],
        workflow_version=row["workflow_version"],
        tenant_id=row["tenant_id"],
        parent_run_id=row["parent_run_id"],
        input=row["input"],
        labels=row["labels"],
        created_at=row["created_at"].astimezone(UTC),
        schema_version=row["schema_version"],
    )


def summary_from_row(row: Mapping[str, Any]) -> RunSummary:
    """Build a run summary from a row of the ``list_runs`` query."""
    updated: datetime = row["updated_at"] or row["created_at"]
    return RunSummary(
        metadata=metadata_from_row(row),
        last_seq=row["last_seq"],
        updated_at=updated.astimezone(UTC),
    )


def parse_feed_cursor(cursor: object) -> tuple[str, int]:
    """Split a feed cursor ``"<transaction id>:<position>"``; ``None`` is the start."""
    if cursor is None:
        return "0", 0
    if type(cursor) is str:
        tx_id, _, position = cursor.partition(":")
        if tx_id.isdigit() and position.isdigit() and len(tx_id) <= 20 and len(position) <= 19:
            return tx_id, int(position)
    raise InvalidInput(f"not a cursor of this store: {cursor!r}", field="cursor")


def feed_page(rows: list[Mapping[str, Any]], cursor: tuple[str, int]) -> FeedPage:
    """Build a feed page and the cursor after its last event."""
    if not rows:
        return FeedPage(events=(), cursor=f"{cursor[0]}:{cursor[1]}")
    last = rows[-1]
    return FeedPage(
        events=tuple(event_from_row(row) for row in rows),
        cursor=f"{last['tx_id']}:{last['position']}",
    )
