-- The W3C trace context (traceparent, tracestate) current when an event was written, for the
-- relay to send on with it (runstate.tracing). A table of its own, keyed by the event's
-- position and written only by traced writes (in the same statement as the events): untraced
-- writes, and the write functions, are unchanged.
CREATE TABLE run_event_traces (
    "position" bigint PRIMARY KEY REFERENCES run_events (position) ON DELETE CASCADE,
    traceparent text NOT NULL,
    tracestate text
);

-- The traces of the given positions, read by the claim statement right after it leases its
-- records. In its own statement, hence its own snapshot (read committed): it sees the trace
-- of every event the claim leased, even of one committed after the claim statement began
-- (whose snapshot would miss it).
CREATE FUNCTION runstate_event_traces(p_positions bigint[])
RETURNS TABLE (o_position bigint, o_traceparent text, o_tracestate text)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
BEGIN
    RETURN QUERY
        SELECT t.position, t.traceparent, t.tracestate
          FROM run_event_traces AS t
         WHERE t.position = ANY (p_positions);
END
$fn$;
