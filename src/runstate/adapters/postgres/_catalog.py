"""Store-wide reads (``RunCatalog``): listing runs and following every event by position."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ...types import RunEventPersisted, RunMetadata, RunSummary
from ._outbox import event_from_row

# How long a hole in the position sequence may stay open before read_all steps over it.
# Positions are drawn inside the write function right before its commit, so a hole older than
# this belongs to a write that was rolled back (or a crash), not to one still committing.
STALE_GAP = timedelta(seconds=5)

LIST_RUNS_SQL = """
SELECT m.run_id, m.workflow, m.workflow_version, m.tenant_id, m.parent_run_id, m.input,
       m.labels, m.created_at, m.schema_version, m.last_seq,
       (SELECT e.recorded_at FROM run_events AS e
         WHERE e.run_id = m.run_id AND e.seq = m.last_seq) AS updated_at
  FROM run_metadata AS m
 WHERE ($1::text IS NULL OR m.workflow = $1::text)
   AND ($2::text IS NULL OR m.tenant_id = $2::text)
   AND ($3::timestamptz IS NULL OR m.created_at > $3::timestamptz)
 ORDER BY m.created_at DESC, m.run_id DESC
 LIMIT $4 OFFSET $5
"""

READ_ALL_SQL = """
SELECT run_id, seq, position, type, payload, event_id, schema_version, occurred_at,
       recorded_at, clock_timestamp() AS now
  FROM run_events
 WHERE position > $1
 ORDER BY position
 LIMIT $2
"""

HEAD_POSITION_SQL = "SELECT coalesce(max(position), 0) FROM run_events"


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
    """Build a run summary from a row of ``LIST_RUNS_SQL``."""
    updated: datetime = row["updated_at"] or row["created_at"]
    return RunSummary(
        metadata=metadata_from_row(row),
        last_seq=row["last_seq"],
        updated_at=updated.astimezone(UTC),
    )


def safe_prefix(rows: list[Mapping[str, Any]], after_position: int) -> list[RunEventPersisted]:
    """Cut a page of events at the first young hole in positions.

    Writers commit out of position order, so an event after a hole may be visible while the
    event in the hole is still committing; returning it would move a follower's cursor past
    that event for ever. Holes older than ``STALE_GAP`` are rolled-back writes and skipped.
    """
    events: list[RunEventPersisted] = []
    expected = after_position + 1
    for row in rows:
        position: int = row["position"]
        if position != expected and row["now"] - row["recorded_at"] < STALE_GAP:
            break
        events.append(event_from_row(row))
        expected = position + 1
    return events
