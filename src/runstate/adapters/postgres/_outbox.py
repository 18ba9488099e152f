"""The outbox queries: claiming per-run prefixes under a lease, and the relay's bookkeeping."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from ...types import OutboxRecord, OutboxStats, RunEventPersisted

# A run's records are claimed only by whoever locks its head (its first undelivered record),
# so SKIP LOCKED lets concurrent relays share runs without ever taking a run out of order.
CLAIM_SQL = """
WITH heads AS (
    SELECT o.outbox_id, o.run_id
      FROM run_outbox AS o
     WHERE o.delivered_at IS NULL
       AND NOT o.dead
       AND (o.available_at IS NULL OR o.available_at <= now())
       AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= now())
       AND NOT EXISTS (SELECT 1 FROM run_outbox AS p
                        WHERE p.run_id = o.run_id AND p.delivered_at IS NULL AND p.seq < o.seq)
     ORDER BY o.outbox_id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), prefix AS (
    SELECT c.outbox_id, h.outbox_id AS head_id
      FROM heads AS h
     CROSS JOIN LATERAL (
            SELECT r.outbox_id, r.seq,
                   bool_and(NOT r.dead
                            AND (r.available_at IS NULL OR r.available_at <= now())
                            AND (r.lease_expires_at IS NULL OR r.lease_expires_at <= now()))
                       OVER (ORDER BY r.seq) AS claimable
              FROM run_outbox AS r
             WHERE r.run_id = h.run_id AND r.delivered_at IS NULL
             ORDER BY r.seq
             LIMIT $2) AS c
     WHERE c.claimable
     ORDER BY h.outbox_id, c.seq
     LIMIT $2
), leased AS (
    UPDATE run_outbox AS u
       SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $3)
      FROM prefix
     WHERE u.outbox_id = prefix.outbox_id
       AND u.delivered_at IS NULL
       AND NOT u.dead
       AND (u.lease_expires_at IS NULL OR u.lease_expires_at <= now())
    RETURNING u.outbox_id, u.seq, u.workflow, u.attempts, u.lease_owner, u.lease_expires_at,
              prefix.head_id
)
SELECT l.outbox_id, l.workflow, l.attempts, l.lease_owner, l.lease_expires_at,
       e.run_id, e.seq, e.position, e.type, e.payload, e.event_id, e.schema_version,
       e.occurred_at, e.recorded_at
  FROM leased AS l
  JOIN run_events AS e ON e.position = l.outbox_id
 ORDER BY l.head_id, l.seq
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
