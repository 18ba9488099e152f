-- Appends claim their seqs with one UPDATE of the run's row instead of locking the row first
-- (SELECT ... FOR NO KEY UPDATE) and updating it at the end: one row change less per append,
-- about 10% less server time (pgbench on the function, 8 clients, server on one core).
-- Same arguments and results; the refusals (conflict, duplicates) give the claimed seqs back
-- inside the transaction.

CREATE OR REPLACE FUNCTION runstate_append(
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
    v_wanted integer := cardinality(p_event_ids);
    v_written integer;
BEGIN
    -- Claim seqs for every candidate on the run's own row: appends to one run queue here,
    -- other runs never wait. Under READ COMMITTED the UPDATE starts from the newest committed
    -- last_seq after any wait; the rare refusals below put it back inside this transaction,
    -- so nobody else ever sees a claimed value.
    UPDATE run_metadata AS m
       SET last_seq = m.last_seq + v_wanted
     WHERE m.run_id = p_run_id
    RETURNING m.last_seq - v_wanted, m.workflow
      INTO o_last_seq, v_workflow;
    IF NOT FOUND THEN
        o_code := 'RUN_NOT_FOUND';
        RETURN;
    END IF;
    IF p_expected_seq IS NOT NULL AND p_expected_seq <> o_last_seq THEN
        UPDATE run_metadata SET last_seq = o_last_seq WHERE run_id = p_run_id;
        o_code := 'CONCURRENCY_CONFLICT';
        RETURN;
    END IF;
    o_code := 'OK';
    o_recorded_at := clock_timestamp();

    -- One statement, later than the row lock, so its fresh snapshot sees the events that the
    -- writer we may have waited for has committed: drop the ids the run already holds,
    -- number the rest after last_seq (the window runs after the filter: no gaps), and write
    -- events and outbox rows.
    WITH inserted AS (
        INSERT INTO run_events (run_id, seq, event_id, type, payload, schema_version,
                                occurred_at, recorded_at)
        SELECT p_run_id, o_last_seq + row_number() OVER (ORDER BY k.i), k.id, k.type,
               k.payload::json, k.sv, k.occ, o_recorded_at
          FROM unnest(p_event_ids, p_types, p_payloads, p_schema_versions, p_occurred_at)
               WITH ORDINALITY AS k (id, type, payload, sv, occ, i)
         -- OFFSET 0 keeps this a probe of run_events_run_event_id per id: as an anti-join,
         -- the generic plan hashed every event id of the run, so appends slowed down as
         -- runs grew (4 ms at 8,000 events).
         WHERE NOT EXISTS (SELECT 1 FROM run_events AS e
                            WHERE e.run_id = p_run_id AND e.event_id = k.id
                           OFFSET 0)
         ORDER BY k.i
        RETURNING position, seq, event_id
    ), enqueued AS (
        INSERT INTO run_outbox (outbox_id, run_id, seq, workflow, recorded_at)
        SELECT inserted.position, p_run_id, inserted.seq, v_workflow, o_recorded_at
          FROM inserted
    )
    -- The caller sends distinct candidate ids, so array_position numbers them (1-based).
    SELECT coalesce(a.appended, '{}'), coalesce(a.positions, '{}')
      INTO o_appended, o_positions
      FROM (SELECT array_agg(array_position(p_event_ids, inserted.event_id)
                             ORDER BY inserted.seq) AS appended,
                   array_agg(inserted.position ORDER BY inserted.seq) AS positions
              FROM inserted) AS a
     WHERE a.positions IS NULL
        OR pg_advisory_xact_lock_shared(
               hashtextextended('runstate.outbox.' || current_schema(), 0)) IS NOT NULL;
    v_written := cardinality(o_positions);
    IF v_written < v_wanted THEN
        -- Some candidates were already stored: give back the seqs they claimed.
        UPDATE run_metadata SET last_seq = o_last_seq + v_written WHERE run_id = p_run_id;
    END IF;
    IF v_written = 0 THEN
        RETURN;
    END IF;
    o_last_seq := o_last_seq + v_written;
    IF EXISTS (SELECT 1 FROM runstate_outbox_watchers) THEN
        PERFORM pg_notify('runstate_outbox', current_schema());
    END IF;
END
$fn$;
