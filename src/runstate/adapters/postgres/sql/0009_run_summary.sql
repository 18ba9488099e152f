-- Version 9: each run's summary (run_summaries), kept current by a trigger on run_events in
-- the transaction of every write, filled here for the runs already stored; and when each
-- outbox record was dead-lettered.

-- The lifecycle table of engine/lifecycle.py (NEXT_STATUS): from which status an event type
-- leads where, and whether that status is terminal. A test checks it against the Python table.
CREATE TABLE runstate_lifecycle (
    from_status text NOT NULL,
    event_type text NOT NULL,
    to_status text NOT NULL,
    terminal boolean NOT NULL,
    PRIMARY KEY (from_status, event_type)
);

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
BEGIN
    WITH RECURSIVE touched AS (
        SELECT n.run_id, min(n.seq) AS first_seq, max(n.seq) AS last_seq
          FROM new_events AS n
         GROUP BY n.run_id
    ), walk (run_id, seq, status, attempt, started_at, finished_at) AS (
        SELECT t.run_id, t.first_seq - 1, coalesce(s.status, 'QUEUED'),
               coalesce(s.attempt, 1), s.started_at, s.finished_at
          FROM touched AS t
          LEFT JOIN run_summaries AS s ON s.run_id = (t.run_id COLLATE "C")
        UNION ALL
        SELECT w.run_id, e.seq,
           coalesce(l.to_status, w.status),
           w.attempt + (l.to_status IS NOT NULL AND e.type = 'RunRetryScheduled')::integer,
           CASE WHEN w.started_at IS NULL AND l.to_status IS NOT NULL
                     AND e.type = 'RunStarted'
                THEN coalesce(e.occurred_at, e.recorded_at) ELSE w.started_at END,
           CASE WHEN l.terminal THEN coalesce(e.occurred_at, e.recorded_at)
                ELSE w.finished_at END
          FROM walk AS w
          JOIN new_events AS e ON e.run_id = w.run_id AND e.seq = w.seq + 1
          LEFT JOIN runstate_lifecycle AS l
                 ON l.from_status = w.status AND l.event_type = e.type
    )
    INSERT INTO run_summaries AS s (run_id, workflow, tenant_id, created_at, status, attempt,
                                    last_seq, updated_at, started_at, finished_at)
    SELECT w.run_id, m.workflow, m.tenant_id, m.created_at, w.status, w.attempt, w.seq,
           e.recorded_at, w.started_at, w.finished_at
      FROM walk AS w
      JOIN touched AS t ON t.run_id = w.run_id AND t.last_seq = w.seq
      JOIN new_events AS e ON e.run_id = w.run_id AND e.seq = w.seq
      JOIN run_metadata AS m ON m.run_id = w.run_id
    ON CONFLICT (run_id) DO UPDATE
       SET status = excluded.status, attempt = excluded.attempt, last_seq = excluded.last_seq,
           updated_at = excluded.updated_at, started_at = excluded.started_at,
           finished_at = excluded.finished_at;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER run_events_summarize
    AFTER INSERT ON run_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION runstate_summarize_events();

-- The backfill: the same fold over every stored run's whole log.
WITH RECURSIVE walk (run_id, seq, status, attempt, started_at, finished_at) AS (
    SELECT m.run_id, 0::bigint, 'QUEUED'::text, 1, NULL::timestamptz, NULL::timestamptz
      FROM run_metadata AS m
    UNION ALL
    SELECT w.run_id, e.seq,
           coalesce(l.to_status, w.status),
           w.attempt + (l.to_status IS NOT NULL AND e.type = 'RunRetryScheduled')::integer,
           CASE WHEN w.started_at IS NULL AND l.to_status IS NOT NULL
                     AND e.type = 'RunStarted'
                THEN coalesce(e.occurred_at, e.recorded_at) ELSE w.started_at END,
           CASE WHEN l.terminal THEN coalesce(e.occurred_at, e.recorded_at)
                ELSE w.finished_at END
      FROM walk AS w
      JOIN run_events AS e ON e.run_id = w.run_id AND e.seq = w.seq + 1
      LEFT JOIN runstate_lifecycle AS l ON l.from_status = w.status AND l.event_type = e.type
)
INSERT INTO run_summaries (run_id, workflow, tenant_id, created_at, status, attempt, last_seq,
                           updated_at, started_at, finished_at)
SELECT w.run_id, m.workflow, m.tenant_id, m.created_at, w.status, w.attempt, w.seq,
       e.recorded_at, w.started_at, w.finished_at
  FROM walk AS w
  JOIN run_metadata AS m ON m.run_id = w.run_id AND m.last_seq = w.seq
  JOIN run_events AS e ON e.run_id = w.run_id AND e.seq = w.seq;

-- Dead letters: when each was dead-lettered, and an index to list them oldest first.
ALTER TABLE run_outbox ADD COLUMN dead_at timestamptz;
CREATE INDEX run_outbox_dead ON run_outbox (outbox_id) WHERE dead AND delivered_at IS NULL;
