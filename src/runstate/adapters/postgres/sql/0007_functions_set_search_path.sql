-- Every function finds its tables through its own search_path, pinned to the schema it lives
-- in, instead of the caller's: the store calls its functions schema-qualified and sets no
-- search_path on its connections, which may then be shared through a transaction-mode pooler
-- (pgbouncer refuses search_path as a startup parameter and keeps no session state across
-- transactions). Migrations run with search_path set to the target schema, so FROM CURRENT
-- pins exactly that schema; current_schema() inside the functions (advisory lock keys and
-- NOTIFY payloads) is the schema as before.
ALTER FUNCTION runstate_watch() SET search_path FROM CURRENT;
ALTER FUNCTION runstate_unwatch() SET search_path FROM CURRENT;
ALTER FUNCTION runstate_claim_outbox(text, integer, double precision)
    SET search_path FROM CURRENT;
ALTER FUNCTION runstate_bootstrap_batch(text[], text[], text[], text[], text[], text[], text[],
                                        timestamptz[], integer[], integer[], text[], integer[],
                                        text[], text[], text[], integer[], timestamptz[])
    SET search_path FROM CURRENT;
ALTER FUNCTION runstate_append_batch(text[], bigint[], text[], text[], text[], text[], integer[],
                                     timestamptz[])
    SET search_path FROM CURRENT;
