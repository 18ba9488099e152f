-- The canonical runstate schema on PostgreSQL: what migrations 0001.. produce, in one file.
-- tests/test_postgres_schema.py checks that applying this file and applying the migrations
-- give the same catalog. Run it with search_path set to the target schema. It does not
-- record versions; a store opened on the schema afterwards would try to migrate again, so
-- use it for review and diffing, and let open_store / migrate() create real schemas.

CREATE TABLE runstate_schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

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
    delivered_at timestamptz,
    dead_at timestamptz
-- Half of each page free: a claim's lease update then stays HOT (see migration 0014).
) WITH (fillfactor = 50);

-- list_runs: newest first.
CREATE INDEX run_metadata_created ON run_metadata (created_at DESC, run_id DESC);

-- The claim query walks undelivered records only; delivered history never slows it down.
CREATE INDEX run_outbox_pending ON run_outbox (outbox_id) WHERE delivered_at IS NULL;
CREATE INDEX run_outbox_pending_run ON run_outbox (run_id, seq) WHERE delivered_at IS NULL;
-- Retention: purge_delivered deletes the oldest deliveries first, in small batches.
CREATE INDEX run_outbox_delivered ON run_outbox (delivered_at) WHERE delivered_at IS NOT NULL;
-- list_dead_letters: oldest first.
CREATE INDEX run_outbox_dead ON run_outbox (outbox_id) WHERE dead AND delivered_at IS NULL;

-- The lifecycle table of engine/lifecycle.py (NEXT_STATUS): from which status an event type
-- leads where, and whether that status is terminal. A test checks it against the Python table.
CREATE TABLE runstate_lifecycle (
    from_status text NOT NULL,
    event_type text NOT NULL,
    to_status text NOT NULL,
    terminal boolean NOT NULL,
    PRIMARY KEY (from_status, event_type)
);

INSERT INTO runstate_lifecycle (from_status, event_type, to_status, terminal) VALUES
    ('CANCELLING', 'RunCancelled', 'CANCELLED', true),
    ('CANCELLING', 'RunFailed', 'FAILED', true),
    ('CANCELLING', 'RunSucceeded', 'SUCCEEDED', true),
    ('PAUSED', 'RunCancelRequested', 'CANCELLING', false),
    ('PAUSED', 'RunCancelled', 'CANCELLED', true),
    ('PAUSED', 'RunResumed', 'RUNNING', false),
    ('PAUSED', 'RunTimedOut', 'TIMED_OUT', true),
    ('QUEUED', 'RunCancelRequested', 'CANCELLING', false),
    ('QUEUED', 'RunCancelled', 'CANCELLED', true),
    ('QUEUED', 'RunFailed', 'FAILED', true),
    ('QUEUED', 'RunStarted', 'RUNNING', false),
    ('QUEUED', 'RunTimedOut', 'TIMED_OUT', true),
    ('RUNNING', 'RunCancelRequested', 'CANCELLING', false),
    ('RUNNING', 'RunFailed', 'FAILED', true),
    ('RUNNING', 'RunPaused', 'PAUSED', false),
    ('RUNNING', 'RunRetryScheduled', 'QUEUED', false),
    ('RUNNING', 'RunSucceeded', 'SUCCEEDED', true),
    ('RUNNING', 'RunTimedOut', 'TIMED_OUT', true);

-- One row per run: the status, attempt and start/finish times the projector computes from
-- its events, its last seq and the recorded time of its last event, plus the metadata the
-- run list filters on. Byte order ("C") for the sort keys, as every adapter sorts.
-- fillfactor leaves room on each page so that an append's update is usually HOT.
CREATE TABLE run_summaries (
    run_id text COLLATE "C" PRIMARY KEY REFERENCES run_metadata (run_id) ON DELETE CASCADE,
    workflow text COLLATE "C" NOT NULL,
    tenant_id text,
    created_at timestamptz NOT NULL,
    status text COLLATE "C" NOT NULL,
    attempt integer NOT NULL,
    last_seq bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz
) WITH (fillfactor = 80);

-- The first page of runs in one status, newest first, is a range scan of this index.
CREATE INDEX run_summaries_status_created ON run_summaries (status, created_at, run_id);
CREATE INDEX run_summaries_created ON run_summaries (created_at, run_id);
CREATE INDEX run_summaries_tenant_created ON run_summaries (tenant_id, created_at, run_id);

-- The summary is kept current by this statement-level trigger, in the statement (and so the
-- transaction) that inserts the events: the batched write functions stay as they are. It
-- folds each run's new events (the transition table) in seq order from the run's stored
-- summary, with the projector's rules: a lifecycle event moves the status where
-- runstate_lifecycle allows it and is ignored elsewhere; any other event keeps it; the first
-- RunStarted sets started_at, a terminal status finished_at, RunRetryScheduled counts an
-- attempt. Writers of one run are serialized by its run_metadata row lock, so the stored
-- summary read here is the newest.
CREATE FUNCTION runstate_summarize_events()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
DECLARE
    e record;
    v_run text;
    v_known boolean;
    v_status text;
    v_attempt integer;
    v_started timestamptz;
    v_finished timestamptz;
    v_seq bigint;
    v_updated timestamptz;
    v_to text;
    v_terminal boolean;
BEGIN
    -- The trailing row without a run writes the last run's summary.
    FOR e IN SELECT n.run_id, n.seq, n.type, coalesce(n.occurred_at, n.recorded_at) AS at,
                    n.recorded_at
               FROM new_events AS n
             UNION ALL
             SELECT NULL, NULL, NULL, NULL, NULL
             ORDER BY 1 NULLS LAST, 2
    LOOP
        IF v_run IS DISTINCT FROM e.run_id THEN
            IF v_known THEN
                UPDATE run_summaries
                   SET status = v_status, attempt = v_attempt, last_seq = v_seq,
                       updated_at = v_updated, started_at = v_started, finished_at = v_finished
                 WHERE run_id = (v_run COLLATE "C");
            ELSIF v_run IS NOT NULL THEN
                INSERT INTO run_summaries (run_id, workflow, tenant_id, created_at, status,
                                           attempt, last_seq, updated_at, started_at,
                                           finished_at)
                SELECT m.run_id, m.workflow, m.tenant_id, m.created_at, v_status, v_attempt,
                       v_seq, v_updated, v_started, v_finished
                  FROM run_metadata AS m
                 WHERE m.run_id = v_run;
            END IF;
            EXIT WHEN e.run_id IS NULL;
            v_run := e.run_id;
            SELECT s.status, s.attempt, s.started_at, s.finished_at
              INTO v_status, v_attempt, v_started, v_finished
              FROM run_summaries AS s
             WHERE s.run_id = (v_run COLLATE "C");
            v_known := FOUND;
            IF NOT v_known THEN
                v_status := 'QUEUED';
                v_attempt := 1;
            END IF;
        END IF;
        SELECT l.to_status, l.terminal INTO v_to, v_terminal
          FROM runstate_lifecycle AS l
         WHERE l.from_status = v_status AND l.event_type = e.type;
        IF FOUND THEN
            v_status := v_to;
            IF e.type = 'RunRetryScheduled' THEN
                v_attempt := v_attempt + 1;
            END IF;
            IF v_started IS NULL AND e.type = 'RunStarted' THEN
                v_started := e.at;
            END IF;
            IF v_terminal THEN
                v_finished := e.at;
            END IF;
        END IF;
        v_seq := e.seq;
        v_updated := e.recorded_at;
    END LOOP;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER run_events_summarize
    AFTER INSERT ON run_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION runstate_summarize_events();

-- The W3C trace context (traceparent, tracestate) current when an event was written, for the
-- relay to send on with it (runstate.tracing). A table of its own, keyed by the event's
-- position and written only by traced writes (in the same statement as the events): untraced
-- writes, and the write functions, are unchanged.
CREATE TABLE run_event_traces (
    "position" bigint PRIMARY KEY REFERENCES run_events (position) ON DELETE CASCADE,
    traceparent text NOT NULL,
    tracestate text
);

CREATE TABLE runstate_outbox_watchers (
    pid integer PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION runstate_watch(OUT o_claimable boolean)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('runstate.outbox.' || current_schema(), 0));
    -- Rows of relays that died without unregistering only cost needless notifications.
    DELETE FROM runstate_outbox_watchers AS w
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a WHERE a.pid = w.pid);
    INSERT INTO runstate_outbox_watchers (pid) VALUES (pg_backend_pid())
    ON CONFLICT (pid) DO NOTHING;
    -- Every writer that missed our row has committed by now (we waited for its lock), so
    -- what it wrote is visible here: report it instead of sleeping through it.
    SELECT EXISTS (
        SELECT 1 FROM run_outbox AS o
         WHERE o.delivered_at IS NULL
           AND NOT o.dead
           AND (o.available_at IS NULL OR o.available_at <= now())
           AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= now())
           AND NOT EXISTS (SELECT 1 FROM run_outbox AS p
                            WHERE p.run_id = o.run_id AND p.delivered_at IS NULL
                              AND p.seq < o.seq))
      INTO o_claimable;
END
$fn$;

CREATE FUNCTION runstate_unwatch()
RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $fn$
    DELETE FROM runstate_outbox_watchers WHERE pid = pg_backend_pid();
$fn$;

-- Bootstraps in batches, set-based (the store's group commit), the batch as one JSON: see
-- migration 0008.
-- p_batch: one array per run, distinct run ids sorted:
--   [run_id, workflow, workflow_version, tenant_id, parent_run_id, input (JSON text),
--    labels (JSON text), created_at, schema_version,
--    [[event_id, type, payload (JSON text), schema_version, occurred_at], ...]]
-- Every run has at least one event (the store refuses a bootstrap without). Results: per run
-- in call order, how many events were written (0 for a refused run) and
-- whether a refused run was the same request (NULL for written runs; the whole array is NULL
-- when every run was written); the written events' positions, run after run, in seq order.
CREATE FUNCTION runstate_bootstrap_batch(
    p_batch jsonb,
    OUT o_counts integer[],
    OUT o_positions bigint[],
    OUT o_recorded_at timestamptz,
    OUT o_same_request boolean[]
)
LANGUAGE plpgsql
-- Generic plans: with custom plans every call would plan its statements again.
SET plan_cache_mode = force_generic_plan
SET search_path FROM CURRENT
-- By key only: a generic plan made while the tables are small would keep sequential scans.
SET enable_seqscan = off
AS $fn$
BEGIN
    IF jsonb_array_length(p_batch) <> (SELECT count(DISTINCT r ->> 0)
                                         FROM jsonb_array_elements(p_batch) AS r) THEN
        RAISE EXCEPTION 'runstate_bootstrap_batch: run ids must be distinct';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(
        hashtextextended('runstate.outbox.' || current_schema(), 0));
    o_recorded_at := clock_timestamp();
    WITH runs AS (
        SELECT r.v, r.n FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS r (v, n)
    ), m AS (
        INSERT INTO run_metadata (run_id, workflow, workflow_version, tenant_id,
                                  parent_run_id, input, labels, created_at, schema_version,
                                  last_seq)
        SELECT r.v ->> 0, r.v ->> 1, r.v ->> 2, r.v ->> 3, r.v ->> 4, (r.v ->> 5)::json,
               (r.v ->> 6)::json, (r.v ->> 7)::timestamptz, (r.v ->> 8)::integer,
               jsonb_array_length(r.v -> 9)
          FROM runs AS r
         ORDER BY r.n
        ON CONFLICT (run_id) DO NOTHING
        RETURNING run_id, workflow
    ), fresh AS (
        -- Positions drawn here, in run order then seq order (the subquery's sort).
        SELECT nextval('run_events_position_seq'::regclass) AS position, k.*
          FROM (SELECT r.n, m.run_id, m.workflow, e.seq, e.v
                  FROM m
                  JOIN runs AS r ON r.v ->> 0 = m.run_id
                 CROSS JOIN LATERAL jsonb_array_elements(r.v -> 9) WITH ORDINALITY AS e (v, seq)
                 ORDER BY r.n, e.seq) AS k
    ), inserted AS (
        INSERT INTO run_events (position, run_id, seq, event_id, type, payload, schema_version,
                                occurred_at, recorded_at)
        OVERRIDING SYSTEM VALUE
        SELECT f.position, f.run_id, f.seq, f.v ->> 0, f.v ->> 1, (f.v ->> 2)::json,
               (f.v ->> 3)::integer, (f.v ->> 4)::timestamptz, o_recorded_at
          FROM fresh AS f
    ), enqueued AS (
        INSERT INTO run_outbox (outbox_id, run_id, seq, workflow, recorded_at)
        SELECT f.position, f.run_id, f.seq, f.workflow, o_recorded_at
          FROM fresh AS f
    ), counted AS (
        SELECT f.n, count(*)::integer AS written FROM fresh AS f GROUP BY f.n
    )
    SELECT (SELECT array_agg(coalesce(c.written, 0) ORDER BY r.n)
              FROM runs AS r LEFT JOIN counted AS c ON c.n = r.n),
           (SELECT coalesce(array_agg(f.position ORDER BY f.position), '{}') FROM fresh AS f)
      INTO o_counts, o_positions;

    IF cardinality(o_positions) > 0 AND EXISTS (SELECT 1 FROM runstate_outbox_watchers) THEN
        PERFORM pg_notify('runstate_outbox', current_schema());
    END IF;
    IF 0 <> ALL (o_counts) THEN
        RETURN;  -- every run was written (each has at least one event): nobody to compare
    END IF;

    -- A new statement, so a new snapshot: a loser's comparison sees the winner's rows.
    SELECT array_agg(
               CASE WHEN c.written > 0 THEN NULL ELSE (
                   SELECT s.workflow = r.v ->> 1
                          AND s.workflow_version IS NOT DISTINCT FROM r.v ->> 2
                          AND s.tenant_id IS NOT DISTINCT FROM r.v ->> 3
                          AND s.parent_run_id IS NOT DISTINCT FROM r.v ->> 4
                          AND s.input::jsonb = (r.v ->> 5)::jsonb
                          AND s.labels::jsonb = (r.v ->> 6)::jsonb
                          AND ARRAY(SELECT e.event_id FROM run_events AS e
                                     WHERE e.run_id = s.run_id
                                     ORDER BY e.seq
                                     LIMIT jsonb_array_length(r.v -> 9))
                              = ARRAY(SELECT k.v ->> 0
                                        FROM jsonb_array_elements(r.v -> 9)
                                             WITH ORDINALITY AS k (v, j)
                                       ORDER BY k.j)
                     FROM run_metadata AS s
                    WHERE s.run_id = r.v ->> 0)
               END
               ORDER BY r.n)
      INTO o_same_request
      FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS r (v, n)
      JOIN unnest(o_counts) WITH ORDINALITY AS c (written, n) ON c.n = r.n;
END
$fn$;

-- Appends in batches, set-based (the store's group commit), the batch as one JSON: see
-- migration 0008; a batch of one run by key lookups (migration 0013).
-- p_batch: one array per run, distinct run ids sorted:
--   [run_id, expected_seq, [[event_id, type, payload (JSON text), schema_version,
--                            occurred_at], ...]]
-- with distinct event ids per run. Results: per run in call order its code and last_seq before
-- this call; and the written events' candidate numbers (1-based within their run) and
-- positions, run after run in call order, in seq order within a run (a run's count is
-- its last_seq after minus before).
CREATE FUNCTION runstate_append_batch(
    p_batch jsonb,
    OUT o_codes text[],
    OUT o_last_seqs bigint[],
    OUT o_new_last_seqs bigint[],
    OUT o_candidates integer[],
    OUT o_positions bigint[],
    OUT o_recorded_at timestamptz
)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET search_path FROM CURRENT
-- By key only: a generic plan made while the tables are small would keep sequential scans.
SET enable_seqscan = off
AS $fn$
DECLARE
    v_workflows text[];
    v_run text;
    v_expected jsonb;
    v_last bigint;
    v_workflow text;
    v_top bigint;
BEGIN
    IF jsonb_array_length(p_batch) = 1 THEN
        -- One run (every lone writer): the same steps and results as the batch below, in
        -- a few key lookups, without the set-based statement's sorts, window and joins
        -- (about an eighth of the server's time per single-event append).
        v_run := p_batch -> 0 ->> 0;
        v_expected := p_batch -> 0 -> 1;
        PERFORM pg_advisory_xact_lock_shared(
            hashtextextended('runstate.outbox.' || current_schema(), 0));
        SELECT m.last_seq, m.workflow INTO v_last, v_workflow
          FROM run_metadata AS m
         WHERE m.run_id = v_run
           FOR NO KEY UPDATE;
        o_recorded_at := clock_timestamp();
        o_last_seqs := ARRAY[v_last];
        o_new_last_seqs := ARRAY[v_last];
        o_candidates := '{}';
        o_positions := '{}';
        IF NOT FOUND THEN
            o_codes := ARRAY['RUN_NOT_FOUND'];
            RETURN;
        END IF;
        IF v_expected <> 'null' AND (v_expected #>> '{}')::bigint <> v_last THEN
            o_codes := ARRAY['CONCURRENCY_CONFLICT'];
            RETURN;
        END IF;
        o_codes := ARRAY['OK'];
        WITH kept AS (
            SELECT e.v, e.candidate,
                   v_last + row_number() OVER (ORDER BY e.candidate) AS seq
              FROM jsonb_array_elements(p_batch -> 0 -> 2) WITH ORDINALITY AS e (v, candidate)
             -- OFFSET 0 keeps this a probe of run_events_run_event_id per id (see 0002).
             WHERE NOT EXISTS (SELECT 1 FROM run_events AS x
                                WHERE x.run_id = v_run AND x.event_id = e.v ->> 0
                               OFFSET 0)
        ), fresh AS (
            SELECT nextval('run_events_position_seq'::regclass) AS position, k.*
              FROM (SELECT * FROM kept ORDER BY kept.seq) AS k
        ), inserted AS (
            INSERT INTO run_events (position, run_id, seq, event_id, type, payload,
                                    schema_version, occurred_at, recorded_at)
            OVERRIDING SYSTEM VALUE
            SELECT f.position, v_run, f.seq, f.v ->> 0, f.v ->> 1, (f.v ->> 2)::json,
                   (f.v ->> 3)::integer, (f.v ->> 4)::timestamptz, o_recorded_at
              FROM fresh AS f
        ), enqueued AS (
            INSERT INTO run_outbox (outbox_id, run_id, seq, workflow, recorded_at)
            SELECT f.position, v_run, f.seq, v_workflow, o_recorded_at
              FROM fresh AS f
        )
        SELECT coalesce(array_agg(f.candidate::integer ORDER BY f.position), '{}'),
               coalesce(array_agg(f.position ORDER BY f.position), '{}'),
               max(f.seq)
          INTO o_candidates, o_positions, v_top
          FROM fresh AS f;
        IF v_top IS NOT NULL THEN
            UPDATE run_metadata SET last_seq = v_top WHERE run_id = v_run;
            o_new_last_seqs := ARRAY[v_top];
            IF EXISTS (SELECT 1 FROM runstate_outbox_watchers) THEN
                PERFORM pg_notify('runstate_outbox', current_schema());
            END IF;
        END IF;
        RETURN;
    END IF;
    IF jsonb_array_length(p_batch) <> (SELECT count(DISTINCT r ->> 0)
                                         FROM jsonb_array_elements(p_batch) AS r) THEN
        RAISE EXCEPTION 'runstate_append_batch: run ids must be distinct';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(
        hashtextextended('runstate.outbox.' || current_schema(), 0));
    -- Lock each run's row, one after the other in the order given. Under READ COMMITTED a
    -- locked row is read at its newest committed version, after any wait.
    SELECT array_agg(CASE WHEN m.run_id IS NULL THEN 'RUN_NOT_FOUND'
                          WHEN r.v -> 1 <> 'null' AND (r.v ->> 1)::bigint <> m.last_seq
                              THEN 'CONCURRENCY_CONFLICT'
                          ELSE 'OK' END ORDER BY r.n),
           array_agg(m.last_seq ORDER BY r.n),
           array_agg(m.workflow ORDER BY r.n)
      INTO o_codes, o_last_seqs, v_workflows
      FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS r (v, n)
      LEFT JOIN LATERAL (SELECT x.run_id, x.last_seq, x.workflow
                           FROM run_metadata AS x
                          WHERE x.run_id = r.v ->> 0
                            FOR NO KEY UPDATE) AS m ON true;
    o_recorded_at := clock_timestamp();

    -- MATERIALIZED: inlined, r.v ->> 0 would be computed after the sorts below, so every
    -- event's row would carry its whole run (all of its events) through them: n * n bytes.
    WITH ok AS MATERIALIZED (
        SELECT r.n, r.v ->> 0 AS run_id, s.last_seq, s.workflow, r.v -> 2 AS events
          FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS r (v, n)
          JOIN unnest(o_codes, o_last_seqs, v_workflows) WITH ORDINALITY
               AS s (code, last_seq, workflow, n) ON s.n = r.n
         WHERE s.code = 'OK'
    ), kept AS (
        SELECT ok.n, ok.run_id, ok.workflow, e.v, e.candidate,
               -- The window runs after the filter, so the kept events are numbered without gaps.
               ok.last_seq + row_number() OVER (PARTITION BY ok.n ORDER BY e.candidate) AS seq
          FROM ok
         CROSS JOIN LATERAL jsonb_array_elements(ok.events) WITH ORDINALITY AS e (v, candidate)
         -- OFFSET 0 keeps this a probe of run_events_run_event_id per id (see 0002).
         WHERE NOT EXISTS (SELECT 1 FROM run_events AS x
                            WHERE x.run_id = ok.run_id AND x.event_id = e.v ->> 0
                           OFFSET 0)
    ), fresh AS (
        -- Positions drawn here, in run order then seq order (the subquery's sort).
        SELECT nextval('run_events_position_seq'::regclass) AS position, k.*
          FROM (SELECT * FROM kept ORDER BY kept.n, kept.seq) AS k
    ), inserted AS (
        INSERT INTO run_events (position, run_id, seq, event_id, type, payload, schema_version,
                                occurred_at, recorded_at)
        OVERRIDING SYSTEM VALUE
        SELECT f.position, f.run_id, f.seq, f.v ->> 0, f.v ->> 1, (f.v ->> 2)::json,
               (f.v ->> 3)::integer, (f.v ->> 4)::timestamptz, o_recorded_at
          FROM fresh AS f
    ), enqueued AS (
        INSERT INTO run_outbox (outbox_id, run_id, seq, workflow, recorded_at)
        SELECT f.position, f.run_id, f.seq, f.workflow, o_recorded_at
          FROM fresh AS f
    ), tops AS (
        SELECT f.n, max(f.run_id) AS run_id, max(f.seq) AS top FROM fresh AS f GROUP BY f.n
    ), moved AS (
        -- The key list makes the scan of run_metadata a probe per run at any table size.
        UPDATE run_metadata AS m
           SET last_seq = t.top
          FROM tops AS t
         WHERE m.run_id = t.run_id
           AND m.run_id = ANY (ARRAY(SELECT t2.run_id FROM tops AS t2))
    )
    SELECT (SELECT coalesce(array_agg(f.candidate::integer ORDER BY f.position), '{}')
              FROM fresh AS f),
           (SELECT coalesce(array_agg(f.position ORDER BY f.position), '{}') FROM fresh AS f),
           (SELECT array_agg(coalesce(t.top, s.last_seq) ORDER BY s.n)
              FROM unnest(o_last_seqs) WITH ORDINALITY AS s (last_seq, n)
              LEFT JOIN tops AS t ON t.n = s.n)
      INTO o_candidates, o_positions, o_new_last_seqs;

    IF cardinality(o_positions) > 0 AND EXISTS (SELECT 1 FROM runstate_outbox_watchers) THEN
        PERFORM pg_notify('runstate_outbox', current_schema());
    END IF;
END
$fn$;

-- Claims: walk the heads (first undelivered record of a run) in outbox_id order through a
-- cursor, one at a time, locking each with SKIP LOCKED, and lease the head's claimable
-- prefix; stop as soon as the batch is full. A backlog of long runs therefore costs about
-- the batch size in index reads, not a scan for `limit` heads.
CREATE FUNCTION runstate_claim_outbox(
    p_owner text,
    p_limit integer,
    p_lease_seconds double precision
)
RETURNS TABLE (
    outbox_id bigint,
    workflow text,
    attempts integer,
    lease_owner text,
    lease_expires_at timestamptz,
    head_id bigint,
    run_id text,
    seq bigint,
    "position" bigint,
    type text,
    payload json,
    event_id text,
    schema_version integer,
    occurred_at timestamptz,
    recorded_at timestamptz
)
LANGUAGE plpgsql
-- Generic plans: with custom plans every call would plan its statements again.
SET plan_cache_mode = force_generic_plan
SET search_path FROM CURRENT
-- By key only: a generic plan made while the tables are small would keep sequential scans.
SET enable_seqscan = off
AS $fn$
DECLARE
    v_left integer := p_limit;
    v_done integer;
    v_expires timestamptz := now() + make_interval(secs => p_lease_seconds);
    v_head_id bigint;
    v_run_id text;
    v_heads CURSOR FOR
        SELECT o.outbox_id, o.run_id
          FROM run_outbox AS o
         WHERE o.delivered_at IS NULL
           AND NOT o.dead
           AND (o.available_at IS NULL OR o.available_at <= now())
           AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= now())
           AND NOT EXISTS (SELECT 1 FROM run_outbox AS p
                            WHERE p.run_id = o.run_id AND p.delivered_at IS NULL
                              AND p.seq < o.seq)
         ORDER BY o.outbox_id
           FOR UPDATE SKIP LOCKED;
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;
    OPEN v_heads;
    LOOP
        FETCH v_heads INTO v_head_id, v_run_id;
        EXIT WHEN NOT FOUND;
        -- The events are read in the same statement: the caller's own snapshot may predate
        -- the writes of the records leased here.
        RETURN QUERY
        WITH leased AS (
            UPDATE run_outbox AS u
               SET lease_owner = p_owner, lease_expires_at = v_expires
              FROM (SELECT r.outbox_id
                      FROM (SELECT r.outbox_id,
                                   bool_and(NOT r.dead
                                            AND (r.available_at IS NULL
                                                 OR r.available_at <= now())
                                            AND (r.lease_expires_at IS NULL
                                                 OR r.lease_expires_at <= now()))
                                       OVER (ORDER BY r.seq) AS claimable
                              FROM run_outbox AS r
                             WHERE r.run_id = v_run_id AND r.delivered_at IS NULL
                             ORDER BY r.seq
                             LIMIT v_left) AS r
                     WHERE r.claimable) AS c
             WHERE u.outbox_id = c.outbox_id
               AND u.delivered_at IS NULL
               AND NOT u.dead
               AND (u.lease_expires_at IS NULL OR u.lease_expires_at <= now())
            RETURNING u.outbox_id, u.workflow, u.attempts, u.lease_owner, u.lease_expires_at
        )
        SELECT l.outbox_id, l.workflow, l.attempts, l.lease_owner, l.lease_expires_at,
               v_head_id, e.run_id, e.seq, e.position, e.type, e.payload, e.event_id,
               e.schema_version, e.occurred_at, e.recorded_at
          FROM leased AS l
          JOIN run_events AS e ON e.position = l.outbox_id;
        GET DIAGNOSTICS v_done = ROW_COUNT;
        v_left := v_left - v_done;
        EXIT WHEN v_left <= 0;
    END LOOP;
    CLOSE v_heads;
END
$fn$;


-- The store's id, generated once when the schema is created: the relay's default CloudEvents
-- source is runstate://<store id>.
CREATE TABLE runstate_store (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    store_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO runstate_store (store_id) VALUES (gen_random_uuid()::text);

-- The traces of the given positions, read by the claim statement right after it leases its
-- records. In its own statement, hence its own snapshot (read committed): it sees the trace
-- of every event the claim leased, even of one committed after the claim statement began
-- (whose snapshot would miss it).
CREATE FUNCTION runstate_event_traces(p_positions bigint[])
RETURNS TABLE (o_position bigint, o_traceparent text, o_tracestate text)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
BEGIN
    RETURN QUERY
        SELECT t.position, t.traceparent, t.tracestate
          FROM run_event_traces AS t
         WHERE t.position = ANY (p_positions);
END
$fn$;
