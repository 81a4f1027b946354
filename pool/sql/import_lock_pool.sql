-- Imports into one pool take turns for their final insert, so two imports of
-- overlapping files cannot deadlock on each other's unique-index entries.
SELECT pg_advisory_xact_lock(hashtextextended('dispenser.import:' || $1, 0))
