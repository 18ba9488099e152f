-- Named statements of the SQLite adapter, loaded once by runstate.adapters._sql.load_queries.
-- Each query starts at a "-- name: <name>" line. Every value is a bound parameter.

-- name: insert_run
INSERT INTO runstate_runs (
    run_id, workflow, workflow_version, tenant_id, parent_run_id,
    input, labels, created_at, schema_version, last_seq,
    status, attempt, updated_at, started_at, finished_at
)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO NOTHING;

-- name: select_run
SELECT run_id, workflow, workflow_version, tenant_id, parent_run_id,
       input, labels, created_at, schema_version
FROM runstate_runs
WHERE run_id = ?;

-- name: select_run_head
SELECT workflow, last_seq, status, attempt, started_at, finished_at
FROM runstate_runs
WHERE run_id = ?;

-- name: update_summary
UPDATE runstate_runs
SET last_seq = ?, status = ?, attempt = ?, updated_at = ?, started_at = ?, finished_at = ?
WHERE run_id = ?;

-- name: insert_event
INSERT INTO runstate_events (
    run_id, seq, event_id, type, payload, schema_version, occurred_at, recorded_at
)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, event_id) DO NOTHING;

-- name: insert_outbox
INSERT INTO runstate_outbox (outbox_id, run_id, seq) VALUES (?, ?, ?);

-- name: insert_trace
-- Only for traced writes (runstate.tracing), in the same transaction as the events.
INSERT INTO runstate_event_traces (position, traceparent, tracestate) VALUES (?, ?, ?);

-- name: first_event_ids
SELECT event_id FROM runstate_events WHERE run_id = ? ORDER BY seq LIMIT ?;

-- name: list_events
SELECT position, seq, type, payload, event_id, schema_version, occurred_at, recorded_at
FROM runstate_events
WHERE run_id = ? AND seq > ?
ORDER BY seq
LIMIT ?;

-- name: outbox_heads
-- Each run's oldest undelivered record, oldest first: read lazily, so a claim reads only as
-- many heads as it needs (runstate_outbox_pending, then one probe of
-- runstate_outbox_undelivered per record passed).
SELECT o.run_id, o.outbox_id
FROM runstate_outbox AS o
WHERE o.delivered_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM runstate_outbox AS p
                  WHERE p.run_id = o.run_id AND p.delivered_at IS NULL AND p.seq < o.seq)
ORDER BY o.outbox_id;

-- name: outbox_run_prefix
SELECT o.outbox_id, o.attempts, o.dead, o.available_at, o.lease_owner, o.lease_expires_at,
       e.position, e.seq, e.type, e.payload, e.event_id, e.schema_version, e.occurred_at,
       e.recorded_at, r.workflow, t.traceparent, t.tracestate
FROM runstate_outbox AS o
JOIN runstate_events AS e ON e.position = o.outbox_id
JOIN runstate_runs AS r ON r.run_id = o.run_id
LEFT JOIN runstate_event_traces AS t ON t.position = o.outbox_id
WHERE o.run_id = ? AND o.delivered_at IS NULL
ORDER BY o.seq
LIMIT ?;

-- name: outbox_lease_run
-- One statement per run claimed: the claimed prefix is every undelivered record of the run
-- from its first seq to its last (runstate_outbox_undelivered).
UPDATE runstate_outbox SET lease_owner = ?, lease_expires_at = ?
WHERE run_id = ? AND delivered_at IS NULL AND seq BETWEEN ? AND ?;

-- name: outbox_delivered
UPDATE runstate_outbox
SET delivered_at = ?
WHERE outbox_id = ? AND lease_owner = ? AND dead = 0 AND delivered_at IS NULL;

-- name: outbox_retry
UPDATE runstate_outbox
SET attempts = attempts + 1, last_error = ?, available_at = ?,
    lease_owner = NULL, lease_expires_at = NULL
WHERE outbox_id = ? AND lease_owner = ? AND delivered_at IS NULL;

-- name: outbox_dead
UPDATE runstate_outbox
SET attempts = attempts + 1, last_error = ?, dead = 1, dead_at = ?,
    lease_owner = NULL, lease_expires_at = NULL
WHERE outbox_id = ? AND lease_owner = ? AND delivered_at IS NULL;

-- name: outbox_dead_unreadable
-- A record whose event cannot be read back (see adapters/_decode.py): dead at claim time.
UPDATE runstate_outbox
SET attempts = attempts + 1, last_error = ?, dead = 1, dead_at = ?,
    lease_owner = NULL, lease_expires_at = NULL
WHERE outbox_id = ?;

-- name: outbox_release
UPDATE runstate_outbox
SET lease_owner = NULL, lease_expires_at = NULL
WHERE outbox_id = ? AND lease_owner = ? AND delivered_at IS NULL;

-- name: outbox_redrive_all
UPDATE runstate_outbox
SET dead = 0, dead_at = NULL, attempts = 0, available_at = NULL
WHERE dead = 1 AND delivered_at IS NULL;

-- name: outbox_redrive_run
UPDATE runstate_outbox
SET dead = 0, dead_at = NULL, attempts = 0, available_at = NULL
WHERE run_id = ? AND dead = 1 AND delivered_at IS NULL;

-- name: outbox_counts
SELECT
    coalesce(sum(dead = 0 AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)), 0),
    coalesce(sum(dead = 0 AND lease_expires_at > ?1), 0),
    coalesce(sum(dead), 0)
FROM runstate_outbox
WHERE delivered_at IS NULL;

-- name: outbox_oldest_pending
SELECT min(e.recorded_at)
FROM runstate_outbox AS o
JOIN runstate_events AS e ON e.position = o.outbox_id
WHERE o.delivered_at IS NULL AND o.dead = 0;

-- name: outbox_purge
DELETE FROM runstate_outbox
WHERE outbox_id IN (
    SELECT outbox_id FROM runstate_outbox
    WHERE delivered_at IS NOT NULL AND delivered_at < ?
    ORDER BY delivered_at
    LIMIT ?
);

-- name: outbox_delivered_count
SELECT count(*) FROM runstate_outbox WHERE delivered_at IS NOT NULL;

-- name: list_runs
SELECT r.run_id, r.workflow, r.workflow_version, r.tenant_id, r.parent_run_id,
       r.input, r.labels, r.created_at, r.schema_version, r.last_seq, r.updated_at,
       r.status, r.attempt, r.started_at, r.finished_at
FROM runstate_runs AS r
WHERE (?1 IS NULL OR r.workflow = ?1)
  AND (?2 IS NULL OR r.tenant_id = ?2)
  AND (?3 IS NULL OR r.created_at > ?3)
ORDER BY r.created_at DESC, r.run_id DESC
LIMIT ?4 OFFSET ?5;

-- name: dead_letters
SELECT o.outbox_id, o.attempts, o.last_error, o.dead_at, r.workflow,
       e.run_id, e.position, e.seq, e.type, e.payload, e.event_id, e.schema_version,
       e.occurred_at, e.recorded_at
FROM runstate_outbox AS o
JOIN runstate_events AS e ON e.position = o.outbox_id
JOIN runstate_runs AS r ON r.run_id = o.run_id
WHERE o.dead = 1 AND o.delivered_at IS NULL AND o.outbox_id > ?1 AND (?2 IS NULL OR o.run_id = ?2)
ORDER BY o.outbox_id
LIMIT ?3;

-- name: lifecycle_table
SELECT from_status, event_type, to_status, terminal FROM runstate_lifecycle;

-- name: read_feed
SELECT run_id, position, seq, type, payload, event_id, schema_version, occurred_at, recorded_at
FROM runstate_events
WHERE position > ?
ORDER BY position
LIMIT ?;

-- name: head_position
SELECT coalesce(max(position), 0) FROM runstate_events;

-- Connection settings, transaction control and the schema version table.

-- name: journal_mode
PRAGMA journal_mode;

-- name: use_wal
PRAGMA journal_mode=WAL;

-- name: synchronous_full
PRAGMA synchronous=FULL;

-- name: synchronous_normal
PRAGMA synchronous=NORMAL;

-- name: foreign_keys_on
PRAGMA foreign_keys=ON;

-- name: data_version
PRAGMA data_version;

-- name: begin_write
BEGIN IMMEDIATE;

-- name: begin_read
BEGIN;

-- name: commit
COMMIT;

-- name: rollback
ROLLBACK;

-- name: savepoint
SAVEPOINT runstate_call;

-- name: rollback_to_savepoint
ROLLBACK TO runstate_call;

-- name: release_savepoint
RELEASE runstate_call;

-- name: has_schema_version_table
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runstate_schema_version';

-- name: schema_version
SELECT max(version) FROM runstate_schema_version;

-- name: record_migration
INSERT INTO runstate_schema_version (version, name, applied_at) VALUES (?, ?, ?);

-- name: store_id
SELECT store_id FROM runstate_store;
