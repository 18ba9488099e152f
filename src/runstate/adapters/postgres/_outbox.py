"""The outbox queries: claiming per-run prefixes under a lease, and the relay's bookkeeping."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from ...types import OutboxRecord, OutboxStats, RunEventPersisted

# runstate_claim_outbox (0003) leases per-run prefixes: a run's records are claimed only by
# whoever locks its head (its first undelivered record), so SKIP LOCKED lets concurrent relays
# share runs without ever taking a run out of order. It returns the head of each record's run
# so the batch comes back run by run (oldest head first), each run in seq order. It joins the
# events itself: this statement's snapshot is older than the function's own statements.
CLAIM_SQL = """
SELECT outbox_id, workflow, attempts, lease_owner, lease_expires_at, run_id, seq, position,
       type, payload, event_id, schema_version, occurred_at, recorded_at
  FROM runstate_claim_outbox($1, $2, $3)
 ORDER BY head_id, seq
"""

MARK_DELIVERED_SQL = """
WITH done AS (
    UPDATE run_outbox
       SET delivered_at = now(), lease_expires_at = NULL
     WHERE outbox_id = ANY($1::bigint[])
       AND lease_owner = $2
       AND delivered_at IS NULL
       AND NOT dead
    RETURNING 1
)
SELECT count(*) FROM done
"""

MARK_FAILED_SQL = """
UPDATE run_outbox
   SET attempts = attempts + 1,
       last_error = $3,
       lease_owner = NULL,
       lease_expires_at = NULL,
       dead = ($4::timestamptz IS NULL),
       available_at = coalesce($4::timestamptz, available_at)
 WHERE outbox_id = $1 AND lease_owner = $2 AND delivered_at IS NULL
"""

RELEASE_SQL = """
WITH released AS (
    UPDATE run_outbox
       SET lease_owner = NULL, lease_expires_at = NULL
     WHERE outbox_id = ANY($1::bigint[]) AND lease_owner = $2 AND delivered_at IS NULL
    RETURNING 1
)
SELECT count(*) FROM released
"""

REDRIVE_SQL = """
WITH redriven AS (
    UPDATE run_outbox
       SET dead = false, attempts = 0, available_at = NULL
     WHERE dead AND delivered_at IS NULL AND ($1::text IS NULL OR run_id = $1::text)
    RETURNING 1
)
SELECT count(*) FROM redriven
"""

# Oldest deliveries first, through run_outbox_delivered; SKIP LOCKED so that concurrent
# purgers never wait for each other.
PURGE_SQL = """
WITH doomed AS (
    SELECT outbox_id
      FROM run_outbox
     WHERE delivered_at IS NOT NULL AND delivered_at < $1
     ORDER BY delivered_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), purged AS (
    DELETE FROM run_outbox AS o
     USING doomed
     WHERE o.outbox_id = doomed.outbox_id
    RETURNING 1
)
SELECT count(*) FROM purged
"""

NOTIFY_SQL = "SELECT pg_notify($1, current_schema())"

STATS_SQL = """
SELECT count(*) FILTER (WHERE NOT dead AND NOT coalesce(lease_expires_at > now(), false))
           AS pending,
       count(*) FILTER (WHERE NOT dead AND coalesce(lease_expires_at > now(), false))
           AS in_flight,
       count(*) FILTER (WHERE dead) AS dead,
       min(recorded_at) FILTER (WHERE NOT dead) AS oldest_pending_at,
       (SELECT count(*) FROM run_outbox WHERE delivered_at IS NOT NULL) AS delivered
  FROM run_outbox
 WHERE delivered_at IS NULL
"""


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
    """Build a claimed outbox record from a row of ``CLAIM_SQL``."""
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
    """Build the outbox summary from the row of ``STATS_SQL``."""
    oldest = row["oldest_pending_at"]
    return OutboxStats(
        pending=row["pending"],
        in_flight=row["in_flight"],
        dead=row["dead"],
        delivered=row["delivered"],
        oldest_pending_at=None if oldest is None else oldest.astimezone(UTC),
    )
