-- runstate SQLite schema, version 2: each run's summary, kept on its row of runstate_runs.
--
-- status, attempt, started_at and finished_at are what the projector computes from the run's
-- events; the adapter updates them (with last_seq) in the transaction of every write, so
-- listing and filtering runs never folds their logs. updated_at is the recorded time of the
-- run's last event. Existing runs are filled below from their events.

ALTER TABLE runstate_runs ADD COLUMN status TEXT NOT NULL DEFAULT 'QUEUED';
ALTER TABLE runstate_runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE runstate_runs ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runstate_runs ADD COLUMN started_at INTEGER;
ALTER TABLE runstate_runs ADD COLUMN finished_at INTEGER;

-- The first page of runs in one status, newest first, is a range scan of this index.
CREATE INDEX runstate_runs_status_created ON runstate_runs (status, created_at, run_id);

-- The lifecycle table of engine/lifecycle.py (NEXT_STATUS), for the backfill below; a test
-- checks that it holds exactly the Python table's rows.
CREATE TABLE runstate_lifecycle (
    from_status TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    to_status   TEXT    NOT NULL,
    terminal    INTEGER NOT NULL CHECK (terminal IN (0, 1)),
    PRIMARY KEY (from_status, event_type)
) WITHOUT ROWID;

INSERT INTO runstate_lifecycle (from_status, event_type, to_status, terminal) VALUES
    ('CANCELLING', 'RunCancelled', 'CANCELLED', 1),
    ('CANCELLING', 'RunFailed', 'FAILED', 1),
    ('CANCELLING', 'RunSucceeded', 'SUCCEEDED', 1),
    ('PAUSED', 'RunCancelRequested', 'CANCELLING', 0),
    ('PAUSED', 'RunCancelled', 'CANCELLED', 1),
    ('PAUSED', 'RunResumed', 'RUNNING', 0),
    ('PAUSED', 'RunTimedOut', 'TIMED_OUT', 1),
    ('QUEUED', 'RunCancelRequested', 'CANCELLING', 0),
    ('QUEUED', 'RunCancelled', 'CANCELLED', 1),
    ('QUEUED', 'RunFailed', 'FAILED', 1),
    ('QUEUED', 'RunStarted', 'RUNNING', 0),
    ('QUEUED', 'RunTimedOut', 'TIMED_OUT', 1),
    ('RUNNING', 'RunCancelRequested', 'CANCELLING', 0),
    ('RUNNING', 'RunFailed', 'FAILED', 1),
    ('RUNNING', 'RunPaused', 'PAUSED', 0),
    ('RUNNING', 'RunRetryScheduled', 'QUEUED', 0),
    ('RUNNING', 'RunSucceeded', 'SUCCEEDED', 1),
    ('RUNNING', 'RunTimedOut', 'TIMED_OUT', 1);

-- The backfill: fold every run's events in seq order (the projector's rules: a lifecycle
-- event moves the status where the table allows it, anything else keeps it; the first
-- RunStarted sets started_at, a terminal status finished_at, RunRetryScheduled counts an
-- attempt), then copy each run's state at its last seq onto its row.
CREATE TEMP TABLE runstate_summary_backfill AS
WITH RECURSIVE walk (run_id, seq, status, attempt, updated_at, started_at, finished_at) AS (
    SELECT r.run_id, 0, 'QUEUED', 1, r.created_at, NULL, NULL
    FROM runstate_runs AS r
    UNION ALL
    SELECT w.run_id, e.seq,
           coalesce(t.to_status, w.status),
           w.attempt + (t.to_status IS NOT NULL AND e.type = 'RunRetryScheduled'),
           e.recorded_at,
           CASE WHEN w.started_at IS NULL AND t.to_status IS NOT NULL AND e.type = 'RunStarted'
                THEN coalesce(e.occurred_at, e.recorded_at) ELSE w.started_at END,
           CASE WHEN t.terminal = 1 THEN coalesce(e.occurred_at, e.recorded_at)
                ELSE w.finished_at END
    FROM walk AS w
    JOIN runstate_events AS e ON e.run_id = w.run_id AND e.seq = w.seq + 1
    LEFT JOIN runstate_lifecycle AS t ON t.from_status = w.status AND t.event_type = e.type
)
SELECT w.run_id, w.status, w.attempt, w.updated_at, w.started_at, w.finished_at
FROM walk AS w
JOIN runstate_runs AS r ON r.run_id = w.run_id AND r.last_seq = w.seq;

UPDATE runstate_runs
SET status = b.status, attempt = b.attempt, updated_at = b.updated_at,
    started_at = b.started_at, finished_at = b.finished_at
FROM temp.runstate_summary_backfill AS b
WHERE b.run_id = runstate_runs.run_id;

DROP TABLE temp.runstate_summary_backfill;

-- Dead letters: when each was dead-lettered, and an index to list them oldest first.
ALTER TABLE runstate_outbox ADD COLUMN dead_at INTEGER;

CREATE INDEX runstate_outbox_dead ON runstate_outbox (outbox_id) WHERE dead = 1;
