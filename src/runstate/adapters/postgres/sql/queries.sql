-- Named statements of the PostgreSQL adapter, loaded once by runstate.adapters._sql.load_queries.
-- Each statement starts at a "-- name: <name>" line. Every value is a bound parameter. Every
-- table and function is qualified with the {schema} placeholder, filled with the store's
-- validated, quoted schema name (identifiers cannot be bound): no statement depends on the
-- connection's search_path, so connections carry no session state and work through
-- transaction-mode poolers (pgbouncer). The functions set their own search_path (0007).

-- The store -------------------------------------------------------------------------------

-- name: bootstrap_batch
-- Group commit: every bootstrap of a batch in one call, set-based, as one JSON (see _batch.py).
SELECT o_counts, o_positions, o_recorded_at, o_same_request
  FROM {schema}.runstate_bootstrap_batch($1);

-- name: append_batch
-- Group commit: every append of a batch (one per run) in one call, set-based, as one JSON.
SELECT o_codes, o_last_seqs, o_new_last_seqs, o_candidates, o_positions, o_recorded_at
  FROM {schema}.runstate_append_batch($1);

-- name: with_traces
-- A traced group-commit write (runstate.tracing): the batch statement {write} (bootstrap_batch
-- or append_batch, unchanged) and, in the same statement (one transaction), the W3C trace of
-- each traced run's new events. {traceparents} and {tracestates} are the two parameters after
-- the write's own (see _batch.with_traces), one element per run of the batch in its order
-- (NULL for an untraced run); {counts} is how many events the write wrote per run, from its
-- result row. The write returns its positions run after run, so run i's are the {counts}[i]
-- after those of the runs before it. The write's rows come back as is.
WITH w AS MATERIALIZED ({write}),
     c AS (
    SELECT x.traceparent, x.tracestate, coalesce(x.n, 0) AS written,
           coalesce(sum(x.n) OVER (ORDER BY x.i ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                    0) AS before
      FROM w
     CROSS JOIN LATERAL unnest({counts}, {traceparents}::text[], {tracestates}::text[])
           WITH ORDINALITY AS x (n, traceparent, tracestate, i)
), t AS (
    INSERT INTO {schema}.run_event_traces ("position", traceparent, tracestate)
    SELECT w.o_positions[c.before + k], c.traceparent, c.tracestate
      FROM w, c
     CROSS JOIN LATERAL generate_series(1, c.written) AS k
     WHERE c.traceparent IS NOT NULL
)
SELECT w.* FROM w;

-- name: list_events
SELECT run_id, seq, position, type, payload, event_id, schema_version, occurred_at, recorded_at
  FROM {schema}.run_events
 WHERE run_id = $1 AND seq > $2
 ORDER BY seq
 LIMIT $3;

-- name: get_metadata
SELECT run_id, workflow, workflow_version, tenant_id, parent_run_id, input, labels, created_at,
       schema_version
  FROM {schema}.run_metadata
 WHERE run_id = $1;

-- The catalog -----------------------------------------------------------------------------

-- name: list_runs
SELECT m.run_id, m.workflow, m.workflow_version, m.tenant_id, m.parent_run_id, m.input,
       m.labels, m.created_at, m.schema_version, s.last_seq, s.updated_at, s.status,
       s.attempt, s.started_at, s.finished_at
  FROM {schema}.run_metadata AS m
  JOIN {schema}.run_summaries AS s ON s.run_id = m.run_id
 WHERE ($1::text IS NULL OR m.workflow = $1::text)
   AND ($2::text IS NULL OR m.tenant_id = $2::text)
   AND ($3::timestamptz IS NULL OR m.created_at > $3::timestamptz)
 ORDER BY m.created_at DESC, m.run_id DESC
 LIMIT $4 OFFSET $5;

-- name: read_feed
-- The feed orders by writing transaction, then position, and shows only transactions older
-- than every one still in progress: a transaction that commits late can then never land
-- behind a cursor already handed out (positions alone can: they are drawn before commit).
SELECT run_id, seq, position, type, payload, event_id, schema_version, occurred_at,
       recorded_at, tx_id::text AS tx_id
  FROM {schema}.run_events
 WHERE (tx_id, position) > ($1::text::xid8, $2::bigint)
   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY tx_id, position
 LIMIT $3;

-- name: feed_head
SELECT pg_snapshot_xmin(pg_current_snapshot())::text;

-- The outbox ------------------------------------------------------------------------------

-- name: claim
-- runstate_claim_outbox (0003) leases per-run prefixes: a run's records are claimed only by
-- whoever locks its head (its first undelivered record), so SKIP LOCKED lets concurrent relays
-- share runs without ever taking a run out of order. It returns the head of each record's run
-- so the batch comes back run by run (oldest head first), each run in seq order. It joins the
-- events itself: this statement's snapshot is older than the function's own statements.
-- The traces of the leased events (0011) come from runstate_event_traces, called after the
-- claim is complete, in a later snapshot for the same reason.
WITH c AS MATERIALIZED (SELECT * FROM {schema}.runstate_claim_outbox($1, $2, $3))
SELECT c.outbox_id, c.workflow, c.attempts, c.lease_owner, c.lease_expires_at, c.run_id,
       c.seq, c.position, c.type, c.payload, c.event_id, c.schema_version, c.occurred_at,
       c.recorded_at, t.o_traceparent AS traceparent, t.o_tracestate AS tracestate
  FROM c
  LEFT JOIN {schema}.runstate_event_traces((SELECT array_agg(c.position) FROM c)) AS t
         ON t.o_position = c.position
 ORDER BY c.head_id, c.seq;

-- name: claimed_by_owner
-- The records a claim just leased to $1, read again (see _store.py: a claim whose rows the
-- driver could not decode), in the claim's order: run by run, oldest head first.
SELECT o.outbox_id, o.workflow, o.attempts, o.lease_owner, o.lease_expires_at, e.run_id,
       e.seq, e.position, e.type, e.payload, e.event_id, e.schema_version, e.occurred_at,
       e.recorded_at, t.traceparent, t.tracestate
  FROM {schema}.run_outbox AS o
  JOIN {schema}.run_events AS e ON e.position = o.outbox_id
  LEFT JOIN {schema}.run_event_traces AS t ON t."position" = o.outbox_id
 WHERE o.lease_owner = $1 AND o.lease_expires_at > now()
   AND o.delivered_at IS NULL AND NOT o.dead
 ORDER BY (SELECT min(p.outbox_id) FROM {schema}.run_outbox AS p
            WHERE p.run_id = o.run_id AND p.delivered_at IS NULL), o.seq;

-- name: mark_delivered
WITH done AS (
    UPDATE {schema}.run_outbox
       SET delivered_at = now(), lease_expires_at = NULL
     WHERE outbox_id = ANY($1::bigint[])
       AND lease_owner = $2
       AND delivered_at IS NULL
       AND NOT dead
    RETURNING 1
)
SELECT count(*) FROM done;

-- name: mark_failed
UPDATE {schema}.run_outbox
   SET attempts = attempts + 1,
       last_error = $3,
       lease_owner = NULL,
       lease_expires_at = NULL,
       dead = ($4::timestamptz IS NULL),
       dead_at = CASE WHEN $4::timestamptz IS NULL THEN now() END,
       available_at = coalesce($4::timestamptz, available_at)
 WHERE outbox_id = $1 AND lease_owner = $2 AND delivered_at IS NULL;

-- name: release
WITH released AS (
    UPDATE {schema}.run_outbox
       SET lease_owner = NULL, lease_expires_at = NULL
     WHERE outbox_id = ANY($1::bigint[]) AND lease_owner = $2 AND delivered_at IS NULL
    RETURNING 1
)
SELECT count(*) FROM released;

-- name: redrive
WITH redriven AS (
    UPDATE {schema}.run_outbox
       SET dead = false, dead_at = NULL, attempts = 0, available_at = NULL
     WHERE dead AND delivered_at IS NULL AND ($1::text IS NULL OR run_id = $1::text)
    RETURNING 1
)
SELECT count(*) FROM redriven;

-- name: purge
-- Oldest deliveries first, through run_outbox_delivered; SKIP LOCKED so that concurrent
-- purgers never wait for each other.
WITH doomed AS (
    SELECT outbox_id
      FROM {schema}.run_outbox
     WHERE delivered_at IS NOT NULL AND delivered_at < $1
     ORDER BY delivered_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), purged AS (
    DELETE FROM {schema}.run_outbox AS o
     USING doomed
     WHERE o.outbox_id = doomed.outbox_id
    RETURNING 1
)
SELECT count(*) FROM purged;

-- name: dead_letters
SELECT o.outbox_id, o.workflow, o.attempts, o.last_error, o.dead_at, e.run_id, e.seq,
       e.position, e.type, e.payload, e.event_id, e.schema_version, e.occurred_at,
       e.recorded_at
  FROM {schema}.run_outbox AS o
  JOIN {schema}.run_events AS e ON e.position = o.outbox_id
 WHERE o.dead AND o.delivered_at IS NULL AND o.outbox_id > $1
   AND ($2::text IS NULL OR o.run_id = $2::text)
 ORDER BY o.outbox_id
 LIMIT $3;

-- name: lifecycle_table
SELECT from_status, event_type, to_status, terminal FROM {schema}.runstate_lifecycle;

-- name: notify
SELECT pg_notify($1, $2);

-- name: stats
SELECT count(*) FILTER (WHERE NOT dead AND NOT coalesce(lease_expires_at > now(), false))
           AS pending,
       count(*) FILTER (WHERE NOT dead AND coalesce(lease_expires_at > now(), false))
           AS in_flight,
       count(*) FILTER (WHERE dead) AS dead,
       min(recorded_at) FILTER (WHERE NOT dead) AS oldest_pending_at,
       (SELECT count(*) FROM {schema}.run_outbox WHERE delivered_at IS NOT NULL) AS delivered
  FROM {schema}.run_outbox
 WHERE delivered_at IS NULL;

-- name: claimable
-- Whether a claim would find a record now: what a relay polls when LISTEN cannot be used
-- (behind a transaction-mode pooler). The same test as runstate_watch's.
SELECT EXISTS (
    SELECT 1 FROM {schema}.run_outbox AS o
     WHERE o.delivered_at IS NULL
       AND NOT o.dead
       AND (o.available_at IS NULL OR o.available_at <= now())
       AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= now())
       AND NOT EXISTS (SELECT 1 FROM {schema}.run_outbox AS p
                        WHERE p.run_id = o.run_id AND p.delivered_at IS NULL
                          AND p.seq < o.seq));

-- name: watch
SELECT o_claimable FROM {schema}.runstate_watch();

-- name: unwatch
SELECT {schema}.runstate_unwatch();

-- Migrations ------------------------------------------------------------------------------

-- name: has_schema_version_table
SELECT to_regclass(format('%I.runstate_schema_version', $1::text)) IS NOT NULL;

-- name: schema_version
SELECT coalesce(max(version), 0) FROM {schema}.runstate_schema_version;

-- name: migration_lock
SELECT pg_advisory_xact_lock(hashtextextended('runstate.migrate.' || $1::text, 0));

-- name: schema_exists
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1);

-- name: create_schema
CREATE SCHEMA {schema};

-- name: use_schema
SELECT set_config('search_path', $1, true);

-- name: create_schema_version_table
CREATE TABLE {schema}.runstate_schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: record_migration
INSERT INTO {schema}.runstate_schema_version (version, name) VALUES ($1, $2);

-- name: store_id
SELECT store_id FROM {schema}.runstate_store;
