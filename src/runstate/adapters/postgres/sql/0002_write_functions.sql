-- The write path: one round trip per bootstrap and per append.
--
-- Both functions return a code instead of raising, so a rejected write costs no exception
-- handling and no sequence value: every conflict is checked before the first row is inserted,
-- and positions come from the identity column only for rows that are written.
--
-- Wake-ups: a committed write sends one NOTIFY on channel runstate_outbox (payload: the schema
-- name) while some relay is waiting, i.e. has a row in runstate_outbox_watchers. PostgreSQL
-- serializes the commits of all notifying transactions in a database, which would cost most
-- of the write throughput, so busy or absent relays are not notified. The advisory lock on
-- the schema's key closes the race between a writer's check and a relay's registration:
-- writers hold it shared from the check to their commit; runstate_watch takes it exclusively.

CREATE TABLE runstate_outbox_watchers (
    pid integer PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION runstate_watch(OUT o_claimable boolean)
LANGUAGE plpgsql
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
AS $fn$
    DELETE FROM runstate_outbox_watchers WHERE pid = pg_backend_pid();
$fn$;

-- ------------------------------------------------------------------------------------------
-- The write functions, the outbox claim and retention.
--
-- The write functions run one data-modifying statement for all their rows (plus the watcher
-- check); the caller drops in-call duplicate event ids before calling, so the functions take
-- exactly the events to write (bootstrap) or the candidates to check against the log (append).
-- The shared advisory lock is taken inside that statement, after its last possible wait on
-- another transaction, so it is still held from before the watcher check until commit. (The
-- store's batched statements take it even earlier, before any row lock: see _batch.py.)
--
-- Every function here runs with plan_cache_mode = force_generic_plan: with array arguments
-- the planner kept choosing custom plans, i.e. planned every statement again on every call,
-- which made an append cost about four times the server time of the plain SQL.

CREATE FUNCTION runstate_bootstrap(
    p_run_id text,
    p_workflow text,
    p_workflow_version text,
    p_tenant_id text,
    p_parent_run_id text,
    p_input text,
    p_labels text,
    p_created_at timestamptz,
    p_schema_version integer,
    p_event_ids text[],
    p_types text[],
    p_payloads text[],
    p_schema_versions integer[],
    p_occurred_at timestamptz[],
    OUT o_code text,
    OUT o_positions bigint[],
    OUT o_recorded_at timestamptz,
    OUT o_same_request boolean
)
LANGUAGE plpgsql
-- Generic plans: with custom plans every call would plan its statements again.
SET plan_cache_mode = force_generic_plan
AS $fn$
BEGIN
    o_recorded_at := clock_timestamp();
    -- The primary key decides the winner: a concurrent inserter makes us wait for its commit,
    -- then DO NOTHING; no unique_violation, no deadlock. Events and outbox rows hang off the
    -- RETURNING row, so a loser writes nothing and draws no position.
    WITH m AS (
        INSERT INTO run_metadata (run_id, workflow, workflow_version, tenant_id,
                                  parent_run_id, input, labels, created_at, schema_version,
                                  last_seq)
        VALUES (p_run_id, p_workflow, p_workflow_version, p_tenant_id, p_parent_run_id,
                p_input::json, p_labels::json, p_created_at, p_schema_version,
                cardinality(p_event_ids))
        ON CONFLICT (run_id) DO NOTHING
        RETURNING run_id
    ), inserted AS (
        INSERT INTO run_events (run_id, seq, event_id, type, payload, schema_version,
                                occurred_at, recorded_at)
        SELECT m.run_id, k.n, k.id, k.type, k.payload::json, k.sv, k.occ, o_recorded_at
          FROM m CROSS JOIN unnest(p_event_ids, p_types, p_payloads, p_schema_versions,
                                   p_occurred_at) WITH ORDINALITY AS k (id, type, payload, sv,
                                                                        occ, n)
         ORDER BY k.n
        RETURNING position, seq
    ), enqueued AS (
        INSERT INTO run_outbox (outbox_id, run_id, seq, workflow, recorded_at)
        SELECT inserted.position, p_run_id, inserted.seq, p_workflow, o_recorded_at
          FROM inserted
    )
    SELECT a.positions
      INTO o_positions
      FROM (SELECT array_agg(inserted.position ORDER BY inserted.seq) AS positions
              FROM inserted) AS a
     WHERE a.positions IS NULL
        OR pg_advisory_xact_lock_shared(
               hashtextextended('runstate.outbox.' || current_schema(), 0)) IS NOT NULL;
    IF o_positions IS NULL THEN
        o_code := 'RUN_ALREADY_EXISTS';
        o_recorded_at := NULL;
        -- A new statement, so a new snapshot: it sees the winner's committed rows.
        SELECT m.workflow = p_workflow
               AND m.workflow_version IS NOT DISTINCT FROM p_workflow_version
               AND m.tenant_id IS NOT DISTINCT FROM p_tenant_id
               AND m.parent_run_id IS NOT DISTINCT FROM p_parent_run_id
               AND m.input::jsonb = p_input::jsonb
               AND m.labels::jsonb = p_labels::jsonb
               AND ARRAY(SELECT e.event_id FROM run_events AS e
                          WHERE e.run_id = p_run_id
                          ORDER BY e.seq
                          LIMIT cardinality(p_event_ids)) = p_event_ids
          INTO o_same_request
          FROM run_metadata AS m
         WHERE m.run_id = p_run_id;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM runstate_outbox_watchers) THEN
        PERFORM pg_notify('runstate_outbox', current_schema());
    END IF;
    o_code := 'OK';
END
$fn$;

CREATE FUNCTION runstate_append(
    p_run_id text,
    p_expected_seq bigint,
    p_event_ids text[],
    p_types text[],
    p_payloads text[],
    p_schema_versions integer[],
    p_occurred_at timestamptz[],
    OUT o_code text,
    OUT o_last_seq bigint,
    OUT o_appended integer[],
    OUT o_positions bigint[],
    OUT o_recorded_at timestamptz
)
LANGUAGE plpgsql
-- Generic plans: with custom plans every call would plan its statements again.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_workflow text;
BEGIN
    -- Lock the run's own row first: appends to one run queue here, other runs never wait.
    -- Under READ COMMITTED this returns the newest committed last_seq after any wait.
    SELECT m.last_seq, m.workflow
      INTO o_last_seq, v_workflow
      FROM run_metadata AS m
     WHERE m.run_id = p_run_id
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        o_code := 'RUN_NOT_FOUND';
        RETURN;
    END IF;
    IF p_expected_seq IS NOT NULL AND p_expected_seq <> o_last_seq THEN
        o_code := 'CONCURRENCY_CONFLICT';
        RETURN;
    END IF;
    o_code := 'OK';
    o_recorded_at := clock_timestamp();

    -- One statement, later than the lock, so its fresh snapshot sees the events that the
    -- writer we may have waited for has committed: drop the ids the run already holds,
    -- number the rest after last_seq, write events and outbox rows, move last_seq.
    WITH fresh AS (
        SELECT k.i::integer AS i, k.id, k.type, k.payload, k.sv, k.occ,
               o_last_seq + row_number() OVER (ORDER BY k.i) AS seq
          FROM unnest(p_event_ids, p_types, p_payloads, p_schema_versions, p_occurred_at)
               WITH ORDINALITY AS k (id, type, payload, sv, occ, i)
         -- OFFSET 0 keeps this a probe of run_events_run_event_id per id: as an anti-join,
         -- the generic plan hashed every event id of the run, so appends slowed down as
         -- runs grew (4 ms at 8,000 events).
         WHERE NOT EXISTS (SELECT 1 FROM run_events AS e
                            WHERE e.run_id = p_run_id AND e.event_id = k.id
                           OFFSET 0)
    ), inserted AS (
        INSERT INTO run_events (run_id, seq, event_id, type, payload, schema_version,
                                occurred_at, recorded_at)
        SELECT p_run_id, f.seq, f.id, f.type, f.payload::json, f.sv, f.occ, o_recorded_at
          FROM fresh AS f
         ORDER BY f.seq
        RETURNING position, seq
    ), enqueued AS (
        INSERT INTO run_outbox (outbox_id, run_id, seq, workflow, recorded_at)
        SELECT inserted.position, p_run_id, inserted.seq, v_workflow, o_recorded_at
          FROM inserted
    ), moved AS (
        UPDATE run_metadata SET last_seq = o_last_seq + (SELECT count(*) FROM fresh)
         WHERE run_id = p_run_id AND EXISTS (SELECT 1 FROM fresh)
    )
    SELECT coalesce((SELECT array_agg(f.i ORDER BY f.i) FROM fresh AS f), '{}'),
           coalesce(a.positions, '{}')
      INTO o_appended, o_positions
      FROM (SELECT array_agg(inserted.position ORDER BY inserted.seq) AS positions
              FROM inserted) AS a
     WHERE a.positions IS NULL
        OR pg_advisory_xact_lock_shared(
               hashtextextended('runstate.outbox.' || current_schema(), 0)) IS NOT NULL;
    IF cardinality(o_positions) = 0 THEN
        RETURN;
    END IF;
    o_last_seq := o_last_seq + cardinality(o_positions);
    IF EXISTS (SELECT 1 FROM runstate_outbox_watchers) THEN
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
