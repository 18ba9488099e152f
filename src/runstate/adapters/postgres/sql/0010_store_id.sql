-- The store's id, generated once when the schema is created (or upgraded to this version)
-- and never changed: the relay's default CloudEvents source is runstate://<store id>, stable
-- for this store and distinct from every other store's, as CloudEvents needs source + id to be.
CREATE TABLE runstate_store (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    store_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO runstate_store (store_id) VALUES (gen_random_uuid()::text);
