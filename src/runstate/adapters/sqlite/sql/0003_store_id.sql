-- The store's id, generated once when the schema is created (or upgraded to this version)
-- and never changed: the relay's default CloudEvents source is runstate://<store id>, stable
-- for this store and distinct from every other store's, as CloudEvents needs source + id to be.
-- A random (version 4) UUID.
CREATE TABLE runstate_store (
    singleton  INTEGER NOT NULL PRIMARY KEY DEFAULT 1 CHECK (singleton = 1),
    store_id   TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO runstate_store (store_id, created_at)
SELECT lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-'
             || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(h, 18, 3) || '-'
             || substr(h, 21, 12)),
       CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
  FROM (SELECT hex(randomblob(16)) AS h);
