-- runstate on PostgreSQL, version 1: metadata, event log, outbox and the two write functions.
-- Applied with search_path set to the target schema; no statement names a schema.

CREATE TABLE run_metadata (
    run_id text PRIMARY KEY,
    workflow text NOT NULL,
    workflow_version text,
    tenant_id text,
    parent_run_id text,
    -- json, not jsonb: the text is kept verbatim so key order and number spelling round-trip.
    input json NOT NULL,
    labels json NOT NULL,
    created_at timestamptz NOT NULL,
    schema_version integer NOT NULL,
    -- The run's last seq: writers serialize on this row (compare-and-set), never on a table.
    last_seq bigint NOT NULL DEFAULT 0
);

CREATE TABLE run_events (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id text NOT NULL REFERENCES run_metadata (run_id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    event_id text NOT NULL,
    type text NOT NULL,
    payload json NOT NULL,
    schema_version integer NOT NULL,
    occurred_at timestamptz,
    recorded_at timestamptz NOT NULL,
    -- The writing transaction: the store-wide feed orders by it (see read_feed).
    tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT run_events_run_seq UNIQUE (run_id, seq),
    CONSTRAINT run_events_run_event_id UNIQUE (run_id, event_id)
);

CREATE INDEX run_events_feed ON run_events (tx_id, position);

CREATE TABLE run_outbox (
    -- The event's position: one record per event, and a stable id for the relay.
    outbox_id bigint PRIMARY KEY REFERENCES run_events (position) ON DELETE CASCADE,
    run_id text NOT NULL,
    seq bigint NOT NULL,
    workflow text NOT NULL,
    recorded_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    available_at timestamptz,
    lease_owner text,
    lease_expires_at timestamptz,
    last_error text,
    dead boolean NOT NULL DEFAULT false,
    delivered_at timestamptz
);

-- list_runs: newest first.
CREATE INDEX run_metadata_created ON run_metadata (created_at DESC, run_id DESC);

-- The claim query walks undelivered records only; delivered history never slows it down.
CREATE INDEX run_outbox_pending ON run_outbox (outbox_id) WHERE delivered_at IS NULL;
CREATE INDEX run_outbox_pending_run ON run_outbox (run_id, seq) WHERE delivered_at IS NULL;

-- Retention: purge_delivered deletes the oldest deliveries first, in small batches.
CREATE INDEX run_outbox_delivered ON run_outbox (delivered_at) WHERE delivered_at IS NOT NULL;
