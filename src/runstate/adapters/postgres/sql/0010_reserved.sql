-- Reserved: this version number belongs to a change developed alongside; this file only keeps
-- the versions numbered 1..N until that change's migration takes its place.
-- (A statement that does nothing: the driver refuses a migration that is all comments.)
SELECT 1;
