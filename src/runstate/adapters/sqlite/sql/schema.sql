-- The canonical runstate SQLite schema: what migrations 0001..N produce (a test checks it).
--
-- Timestamps are INTEGER microseconds since 1970-01-01T00:00:00Z (UTC): exact, and they
-- compare correctly in SQL. JSON documents are TEXT, written by runstate's strict encoder.

CREATE TABLE runstate_schema_version (
    version    INTEGER NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
);

CREATE TABLE runstate_runs (
    run_id           TEXT    NOT NULL PRIMARY KEY,
    workflow         TEXT    NOT NULL,
    workflow_version TEXT,
    tenant_id        TEXT,
    parent_run_id    TEXT,
    input            TEXT    NOT NULL,
    labels           TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    schema_version   INTEGER NOT NULL,
    last_seq         INTEGER NOT NULL DEFAULT 0,
    -- The run's summary, written with last_seq in the transaction of every write: status,
    -- attempt, started_at and finished_at as the projector computes them; updated_at is the
    -- recorded time of the last event.
    status           TEXT    NOT NULL DEFAULT 'QUEUED',
    attempt          INTEGER NOT NULL DEFAULT 1,
    updated_at       INTEGER NOT NULL DEFAULT 0,
    started_at       INTEGER,
    finished_at      INTEGER
);

-- list_runs: newest first.
CREATE INDEX runstate_runs_created ON runstate_runs (created_at, run_id);

-- The first page of runs in one status, newest first, is a range scan of this index.
CREATE INDEX runstate_runs_status_created ON runstate_runs (status, created_at, run_id);

-- The lifecycle table of engine/lifecycle.py (NEXT_STATUS), as migration 0002 fills it.
CREATE TABLE runstate_lifecycle (
    from_status TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    to_status   TEXT    NOT NULL,
    terminal    INTEGER NOT NULL CHECK (terminal IN (0, 1)),
    PRIMARY KEY (from_status, event_type)
) WITHOUT ROWID;

-- position is the rowid: store-wide and increasing in commit order, because writers are
-- serialized by BEGIN IMMEDIATE and events are never deleted.
CREATE TABLE runstate_events (
    position       INTEGER NOT NULL PRIMARY KEY,
    run_id         TEXT    NOT NULL REFERENCES runstate_runs (run_id),
    seq            INTEGER NOT NULL,
    event_id       TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    occurred_at    INTEGER,
    recorded_at    INTEGER NOT NULL,
    UNIQUE (run_id, seq),
    UNIQUE (run_id, event_id)
);

-- One record per appended event; outbox_id is the event's position. Delivered records stay
-- (delivered_at set) so that operators can audit deliveries.
CREATE TABLE runstate_outbox (
    outbox_id        INTEGER NOT NULL PRIMARY KEY REFERENCES runstate_events (position),
    run_id           TEXT    NOT NULL,
    seq              INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    available_at     INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    dead             INTEGER NOT NULL DEFAULT 0 CHECK (dead IN (0, 1)),
    delivered_at     INTEGER,
    dead_at          INTEGER
);

-- Claims walk each run's prefix in seq order, and ask whether a record has an undelivered one
-- before it. A partial index: it stays as small as the backlog.
CREATE INDEX runstate_outbox_undelivered
    ON runstate_outbox (run_id, seq) WHERE delivered_at IS NULL;

-- Claims walk the undelivered records oldest first, stopping when the batch is full (0005).
CREATE INDEX runstate_outbox_pending
    ON runstate_outbox (outbox_id) WHERE delivered_at IS NULL;

-- Retention: purge_delivered deletes the oldest deliveries first, in small batches.
CREATE INDEX runstate_outbox_delivered
    ON runstate_outbox (delivered_at) WHERE delivered_at IS NOT NULL;

-- list_dead_letters: oldest first.
CREATE INDEX runstate_outbox_dead ON runstate_outbox (outbox_id) WHERE dead = 1;

-- The store's id (a random UUID), generated once when the schema is created: the relay's
-- default CloudEvents source is runstate://<store id>.
CREATE TABLE runstate_store (
    singleton  INTEGER NOT NULL PRIMARY KEY DEFAULT 1 CHECK (singleton = 1),
    store_id   TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- The W3C trace context (traceparent, tracestate) current when an event was written, for the
-- relay to send on with it (runstate.tracing). A table of its own, keyed by the event's
-- position and written only by traced writes (in the same transaction as the events):
-- untraced writes are unchanged.
CREATE TABLE runstate_event_traces (
    position    INTEGER NOT NULL PRIMARY KEY REFERENCES runstate_events (position),
    traceparent TEXT    NOT NULL,
    tracestate  TEXT
);
