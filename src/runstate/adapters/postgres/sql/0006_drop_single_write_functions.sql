-- runstate_bootstrap and runstate_append (0002, 0003) wrote one run per call. Since 0004 and
-- 0005 the store writes every batch through runstate_bootstrap_batch / runstate_append_batch
-- and nothing calls them. Superseded functions are dropped by the next migration (see
-- docs/design.md, "Schema changes"): a process of the release that still called them is not
-- supported against this schema.
DROP FUNCTION runstate_bootstrap(text, text, text, text, text, text, text, timestamptz, integer,
                                 text[], text[], text[], integer[], timestamptz[]);
DROP FUNCTION runstate_append(text, bigint, text[], text[], text[], integer[], timestamptz[]);
