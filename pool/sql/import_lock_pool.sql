-- Imports into one pool take turns for their final insert, so two imports of
-- overlapping files cannot deadlock on each other's unique-index entries.
-- The schema is part of the key, so separate schemas never wait on each other.
SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':dispenser.import:' || $1, 0))
