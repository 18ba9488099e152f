-- The batch write functions take their batch as ONE jsonb parameter and do linear work in it.
--
-- Why: the append function of 0005 joined the rows it had inserted back to its candidates
-- (on run id and seq) to find each event's workflow and candidate number. The planner knows
-- nothing of the sizes of those CTEs and joined them with a nested loop, so one append of n
-- events compared n * n pairs (1,600 events: 2.5 million comparisons, 1 s of 1.1). Here every
-- event's position is drawn before the INSERTs, so the events, their outbox records and the
-- results all come from one materialized set and nothing is joined event to event. The only
-- joins left are of runs with runs (at most a batch of them, 32).
--
-- And the 17 (bootstrap) or 8 (append) typed arrays of 0004/0005 cost the client about as
-- much CPU as the rest of its write (asyncpg checks and encodes every element of every
-- array); one JSON text is encoded by Python's C encoder in a few microseconds, and the server
-- parses it once.
--
-- The rules are unchanged from 0004 and 0005; per run:
--
-- - bootstrap: the primary key decides each winner (ON CONFLICT DO NOTHING waits for a
--   concurrent inserter's commit, then skips); a loser writes nothing and draws no position;
--   a loser's o_same_request is computed by a later statement, whose fresh snapshot sees the
--   winner's committed rows;
-- - append: the run's own row serializes its writers, locked first, in the order given (the
--   caller sorts by run id), so batches never deadlock and other runs never wait; "not found"
--   and "conflict" (expected_seq) refuse a run and write nothing for it; the events are written
--   by a later statement, whose fresh snapshot sees the events of the writers we waited for:
--   ids the run already holds are dropped, the rest are numbered after last_seq without gaps;
-- - every batch takes the schema's shared advisory lock before any row lock (see
--   runstate_watch), and sends one NOTIFY per transaction while a relay waits.
--
-- Positions are drawn in run order, then seq order, so within a run they grow with seq.

DROP FUNCTION runstate_bootstrap_batch(text[], text[], text[], text[], text[], text[], text[],
                                       timestamptz[], integer[], integer[], text[], integer[],
                                       text[], text[], text[], integer[], timestamptz[]);
DROP FUNCTION runstate_append_batch(text[], bigint[], text[], text[], text[], text[], integer[],
                                    timestamptz[]);

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
        UPDATE run_metadata AS m
           SET last_seq = t.top
          FROM tops AS t
         WHERE m.run_id = t.run_id
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
