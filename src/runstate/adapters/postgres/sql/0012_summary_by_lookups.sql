-- Version 12: the run summary folded by a loop of key lookups, and key-only plans for the
-- write and claim functions.
--
-- These functions run on generic plans, made once per session from the statistics of the
-- moment. A plan made while a table is small (every new deployment) joins by a sequential
-- scan and keeps doing so as the table grows: runstate_append_batch's update of run_metadata
-- scanned every run for each single-event append (0.3x the rate of the same append with an
-- index probe at 12,000 runs). Every table access in these functions is meant to go by key,
-- so sequential scans are ruled out for the plans they make.
ALTER FUNCTION runstate_bootstrap_batch(jsonb) SET enable_seqscan = off;
ALTER FUNCTION runstate_claim_outbox(text, integer, double precision) SET enable_seqscan = off;

-- runstate_append_batch as in version 8 but for that setting and the update of run_metadata,
-- which now names its keys: with a join alone, a plan could read every run to find the batch's.
CREATE OR REPLACE FUNCTION runstate_append_batch(
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
BEGIN
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

-- The summary trigger's body: each run's new events in seq order, folded from its stored
-- summary with one index lookup per step, instead of a recursive join over the transition
-- table (which cost about twice the server time per write).
CREATE OR REPLACE FUNCTION runstate_summarize_events()
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
