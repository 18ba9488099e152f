-- Reserved: this version number belongs to a change developed alongside; this file only keeps
-- the versions numbered 1..N until that change's migration takes its place. It changes nothing.
SELECT 1;
