-- Version 13: runstate_append_batch answers a batch of one run (every lone writer) by key
-- lookups of its own, and the batch of several runs as in version 12.
--
-- Measured on 2 cores with pgbench calling the function for single-event appends: the
-- set-based statement's sorts, window, aggregates and joins cost about 1/8 of the time of
-- such an append; the lookups return the same codes, seqs, candidates and positions.
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
