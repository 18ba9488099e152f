-- The W3C trace context (traceparent, tracestate) current when an event was written, for the
-- relay to send on with it (runstate.tracing). A table of its own, keyed by the event's
-- position and written only by traced writes (in the same transaction as the events):
-- untraced writes are unchanged.
CREATE TABLE runstate_event_traces (
    position    INTEGER NOT NULL PRIMARY KEY REFERENCES runstate_events (position),
    traceparent TEXT    NOT NULL,
    tracestate  TEXT
);
