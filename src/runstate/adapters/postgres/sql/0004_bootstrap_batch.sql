-- Bootstraps in batches: the store's group commit sends every waiting bootstrap in one call,
-- whose rows are written set-based (one INSERT per table for the whole batch) instead of one
-- runstate_bootstrap call, with its own statements, per run. Same rules as runstate_bootstrap,
-- per run:
--
-- - the primary key decides each winner (ON CONFLICT DO NOTHING waits for a concurrent
--   inserter's commit, then skips); a loser writes nothing and draws no position;
-- - a loser's o_same_request is computed by a later statement, whose fresh snapshot sees the
--   winner's committed rows;
-- - one NOTIFY per transaction while a relay waits.
--
-- The caller sends distinct run ids sorted (so batches lock run ids in one global order), one
-- array element per run, and the events as parallel arrays in run order then seq order, each
-- with its run id, seq and the run's workflow. Results: the written events' run ids and
-- positions in position order, and per run (in call order) whether a refused run was the same
-- request (NULL for written runs).

CREATE FUNCTION runstate_bootstrap_batch(
    p_run_ids text[],
    p_workflows text[],
    p_workflow_versions text[],
    p_tenant_ids text[],
    p_parent_run_ids text[],
    p_inputs text[],
    p_labels text[],
    p_created_at timestamptz[],
    p_schema_versions integer[],
    p_event_counts integer[],
    p_ev_run_ids text[],
    p_ev_seqs integer[],
    p_ev_ids text[],
    p_ev_types text[],
    p_ev_payloads text[],
    p_ev_schema_versions integer[],
    p_ev_occurred_at timestamptz[],
    OUT o_run_ids text[],
    OUT o_positions bigint[],
    OUT o_recorded_at timestamptz,
    OUT o_same_request boolean[]
)
LANGUAGE plpgsql
-- Generic plans: with custom plans every call would plan its statements again.
SET plan_cache_mode = force_generic_plan
AS $fn$
BEGIN
    IF cardinality(p_run_ids) <> (SELECT count(DISTINCT r) FROM unnest(p_run_ids) AS r) THEN
        RAISE EXCEPTION 'runstate_bootstrap_batch: run ids must be distinct';
    END IF;
    -- Before any row lock, as in every batched write (see runstate_watch).
    PERFORM pg_advisory_xact_lock_shared(
        hashtextextended('runstate.outbox.' || current_schema(), 0));
    o_recorded_at := clock_timestamp();
    WITH m AS (
        INSERT INTO run_metadata (run_id, workflow, workflow_version, tenant_id,
                                  parent_run_id, input, labels, created_at, schema_version,
                                  last_seq)
        SELECT r.run_id, r.workflow, r.workflow_version, r.tenant_id, r.parent_run_id,
               r.input::json, r.labels::json, r.created_at, r.schema_version, r.event_count
          FROM unnest(p_run_ids, p_workflows, p_workflow_versions, p_tenant_ids,
                      p_parent_run_ids, p_inputs, p_labels, p_created_at, p_schema_versions,
                      p_event_counts)
               WITH ORDINALITY AS r (run_id, workflow, workflow_version, tenant_id,
                                     parent_run_id, input, labels, created_at,
                                     schema_version, event_count, n)
         ORDER BY r.n
        ON CONFLICT (run_id) DO NOTHING
        RETURNING run_id, workflow
    ), inserted AS (
        INSERT INTO run_events (run_id, seq, event_id, type, payload, schema_version,
                                occurred_at, recorded_at)
        SELECT k.run_id, k.seq, k.id, k.type, k.payload::json, k.sv, k.occ, o_recorded_at
          FROM unnest(p_ev_run_ids, p_ev_seqs, p_ev_ids, p_ev_types, p_ev_payloads,
                      p_ev_schema_versions, p_ev_occurred_at)
               WITH ORDINALITY AS k (run_id, seq, id, type, payload, sv, occ, j)
         WHERE k.run_id IN (SELECT m.run_id FROM m)
         ORDER BY k.j
        RETURNING position, run_id, seq
    ), enqueued AS (
        INSERT INTO run_outbox (outbox_id, run_id, seq, workflow, recorded_at)
        SELECT inserted.position, inserted.run_id, inserted.seq, m.workflow, o_recorded_at
          FROM inserted JOIN m ON m.run_id = inserted.run_id
    )
    SELECT coalesce(array_agg(inserted.run_id ORDER BY inserted.position), '{}'),
           coalesce(array_agg(inserted.position ORDER BY inserted.position), '{}')
      INTO o_run_ids, o_positions
      FROM inserted;

    IF cardinality(o_positions) > 0 AND EXISTS (SELECT 1 FROM runstate_outbox_watchers) THEN
        PERFORM pg_notify('runstate_outbox', current_schema());
    END IF;
    IF cardinality(o_positions) = (SELECT sum(c) FROM unnest(p_event_counts) AS c) THEN
        RETURN;  -- every run was written: nobody to compare
    END IF;

    -- A new statement, so a new snapshot: a loser's comparison sees the winner's rows.
    SELECT array_agg(
               CASE WHEN r.run_id = ANY (o_run_ids) THEN NULL ELSE (
                   SELECT s.workflow = r.workflow
                          AND s.workflow_version IS NOT DISTINCT FROM r.workflow_version
                          AND s.tenant_id IS NOT DISTINCT FROM r.tenant_id
                          AND s.parent_run_id IS NOT DISTINCT FROM r.parent_run_id
                          AND s.input::jsonb = r.input::jsonb
                          AND s.labels::jsonb = r.labels::jsonb
                          AND ARRAY(SELECT e.event_id FROM run_events AS e
                                     WHERE e.run_id = s.run_id
                                     ORDER BY e.seq
                                     LIMIT r.event_count)
                              = ARRAY(SELECT k.id
                                        FROM unnest(p_ev_run_ids, p_ev_ids)
                                             WITH ORDINALITY AS k (run_id, id, j)
                                       WHERE k.run_id = r.run_id
                                       ORDER BY k.j)
                     FROM run_metadata AS s
                    WHERE s.run_id = r.run_id)
               END
               ORDER BY r.n)
      INTO o_same_request
      FROM unnest(p_run_ids, p_workflows, p_workflow_versions, p_tenant_ids, p_parent_run_ids,
                  p_inputs, p_labels, p_event_counts)
           WITH ORDINALITY AS r (run_id, workflow, workflow_version, tenant_id, parent_run_id,
                                 input, labels, event_count, n);
END
$fn$;
