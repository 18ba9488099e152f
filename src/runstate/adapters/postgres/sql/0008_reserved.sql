-- Version 8 is another change's migration, developed at the same time as version 9; this
-- placeholder keeps the versions numbered 1..N until both are merged, when that migration
-- replaces it. It changes nothing.
SELECT 1;
