"""Store-wide reads (``RunCatalog``): listing runs and the commit-safe feed of every event."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ...errors import InvalidInput
from ...types import FeedPage, RunMetadata, RunSummary
from ._outbox import event_from_row

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

# The feed orders by writing transaction, then position, and shows only transactions older
# than every one still in progress: a transaction that commits late can then never land
# behind a cursor already handed out (positions alone can: they are drawn before commit).
READ_FEED_SQL = """
SELECT run_id, seq, position, type, payload, event_id, schema_version, occurred_at,
       recorded_at, tx_id::text AS tx_id
  FROM run_events
 WHERE (tx_id, position) > ($1::text::xid8, $2::bigint)
   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY tx_id, position
 LIMIT $3
"""

FEED_HEAD_SQL = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"


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
