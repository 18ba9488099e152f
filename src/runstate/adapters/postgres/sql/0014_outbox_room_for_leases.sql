-- Room on every outbox page for each record's lease. A claim writes lease_owner and
-- lease_expires_at, columns no index holds, so the update can be HOT (no new index entries)
-- when the record's page has room for the new row version; full pages made every lease
-- write three index insertions, a third of the server's work per relayed record. Half a page
-- fits a record and its leased version; later versions reuse the space pruned from earlier
-- ones. Pages written before this keep their layout until rewritten.
ALTER TABLE run_outbox SET (fillfactor = 50);
