-- Appends in batches: the store's group commit sends the waiting appends (one per run) in one
-- call, written set-based, instead of one runstate_append call per run. Same rules as
-- runstate_append, per run:
--
-- - the run's own row serializes its writers: the rows are locked first, in run id order
--   (the caller sorts), so batches never deadlock and other runs never wait;
-- - "not found" and "conflict" (expected_seq) refuse a run and write nothing for it;
-- - the events are written by a later statement, whose fresh snapshot sees the events of the
--   writers we waited for: ids the run already holds are dropped, the rest are numbered after
--   last_seq without gaps;
-- - one NOTIFY per transaction while a relay waits.
--
-- The caller sends distinct run ids, one array element per run, and the candidate events
-- (distinct ids per run) as parallel arrays in run order then call order. Results: per run (in
-- call order) its code and last_seq before this call; and the written events' run ids,
-- candidate numbers (1-based within their run) and positions, in position order.

CREATE FUNCTION runstate_append_batch(
    p_run_ids text[],
    p_expected_seqs bigint[],
    p_ev_run_ids text[],
    p_ev_ids text[],
    p_ev_types text[],
    p_ev_payloads text[],
    p_ev_schema_versions integer[],
    p_ev_occurred_at timestamptz[],
    OUT o_codes text[],
    OUT o_last_seqs bigint[],
    OUT o_run_ids text[],
    OUT o_candidates integer[],
    OUT o_positions bigint[],
    OUT o_recorded_at timestamptz
)
LANGUAGE plpgsql
-- Generic plans: with custom plans every call would plan its statements again.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_workflows text[];
BEGIN
    IF cardinality(p_run_ids) <> (SELECT count(DISTINCT r) FROM unnest(p_run_ids) AS r) THEN
        RAISE EXCEPTION 'runstate_append_batch: run ids must be distinct';
    END IF;
    -- Before any row lock, as in every batched write (see runstate_watch).
    PERFORM pg_advisory_xact_lock_shared(
        hashtextextended('runstate.outbox.' || current_schema(), 0));
    -- Lock each run's row, one after the other in the order given. Under READ COMMITTED a
    -- locked row is read at its newest committed version, after any wait.
    SELECT array_agg(CASE WHEN m.run_id IS NULL THEN 'RUN_NOT_FOUND'
                          WHEN r.expected IS NOT NULL AND r.expected <> m.last_seq
                              THEN 'CONCURRENCY_CONFLICT'
                          ELSE 'OK' END ORDER BY r.n),
           array_agg(m.last_seq ORDER BY r.n),
           array_agg(m.workflow ORDER BY r.n)
      INTO o_codes, o_last_seqs, v_workflows
      FROM unnest(p_run_ids, p_expected_seqs) WITH ORDINALITY AS r (run_id, expected, n)
      LEFT JOIN LATERAL (SELECT x.run_id, x.last_seq, x.workflow
                           FROM run_metadata AS x
                          WHERE x.run_id = r.run_id
                            FOR NO KEY UPDATE) AS m ON true;
    o_recorded_at := clock_timestamp();

    WITH ok AS (
        SELECT r.run_id, r.last_seq, r.workflow
          FROM unnest(p_run_ids, o_codes, o_last_seqs, v_workflows)
               AS r (run_id, code, last_seq, workflow)
         WHERE r.code = 'OK'
    ), candidates AS (
        SELECT k.run_id, k.id, k.type, k.payload, k.sv, k.occ, k.j,
               row_number() OVER (PARTITION BY k.run_id ORDER BY k.j) AS candidate
          FROM unnest(p_ev_run_ids, p_ev_ids, p_ev_types, p_ev_payloads, p_ev_schema_versions,
                      p_ev_occurred_at)
               WITH ORDINALITY AS k (run_id, id, type, payload, sv, occ, j)
    ), fresh AS (
        -- The window runs after the filter, so the kept events are numbered without gaps.
        SELECT c.run_id, c.id, c.type, c.payload, c.sv, c.occ, c.j, c.candidate, ok.workflow,
               ok.last_seq + row_number() OVER (PARTITION BY c.run_id ORDER BY c.j) AS seq
          FROM candidates AS c
          JOIN ok ON ok.run_id = c.run_id
         -- OFFSET 0 keeps this a probe of run_events_run_event_id per id (see 0002).
         WHERE NOT EXISTS (SELECT 1 FROM run_events AS e
                            WHERE e.run_id = c.run_id AND e.event_id = c.id
                           OFFSET 0)
    ), inserted AS (
        INSERT INTO run_events (run_id, seq, event_id, type, payload, schema_version,
                                occurred_at, recorded_at)
        SELECT f.run_id, f.seq, f.id, f.type, f.payload::json, f.sv, f.occ, o_recorded_at
          FROM fresh AS f
         ORDER BY f.j
        RETURNING position, run_id, seq
    ), enqueued AS (
        INSERT INTO run_outbox (outbox_id, run_id, seq, workflow, recorded_at)
        SELECT i.position, i.run_id, i.seq, f.workflow, o_recorded_at
          FROM inserted AS i JOIN fresh AS f ON f.run_id = i.run_id AND f.seq = i.seq
    ), moved AS (
        UPDATE run_metadata AS m
           SET last_seq = t.top
          FROM (SELECT f.run_id, max(f.seq) AS top FROM fresh AS f GROUP BY f.run_id) AS t
         WHERE m.run_id = t.run_id
    )
    SELECT coalesce(array_agg(i.run_id ORDER BY i.position), '{}'),
           coalesce(array_agg(f.candidate::integer ORDER BY i.position), '{}'),
           coalesce(array_agg(i.position ORDER BY i.position), '{}')
      INTO o_run_ids, o_candidates, o_positions
      FROM inserted AS i JOIN fresh AS f ON f.run_id = i.run_id AND f.seq = i.seq;

    IF cardinality(o_positions) > 0 AND EXISTS (SELECT 1 FROM runstate_outbox_watchers) THEN
        PERFORM pg_notify('runstate_outbox', current_schema());
    END IF;
END
$fn$;
