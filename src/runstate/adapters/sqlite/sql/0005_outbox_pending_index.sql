-- Undelivered records in position order: a claim walks them oldest first and stops as soon as
-- its batch is full, instead of grouping every undelivered record by run on every claim (which
-- cost a claim time in proportion to the whole backlog: about 100 ms with 100,000 runs waiting,
-- all of it holding the writer).
CREATE INDEX runstate_outbox_pending
    ON runstate_outbox (outbox_id) WHERE delivered_at IS NULL;
