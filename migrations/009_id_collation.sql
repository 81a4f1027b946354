-- Request and user ids are opaque bytes, like codes: compare them with
-- memcmp ("C" collation) rather than by the database's locale. Every claim
-- inserts them into two unique indexes and probes them in four, and with a
-- locale such as en_US.UTF-8 each comparison there is a strcoll call: about
-- 5 µs per claim row more in those indexes (docs/BENCHMARKS.md). Pool ids
-- keep the database's collation: every table names them, and a join between
-- columns of two collations could not use the other table's index.
-- Rebuilds the indexes that hold these columns.
ALTER TABLE claims
    ALTER COLUMN request_id TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C";
ALTER TABLE refusals
    ALTER COLUMN request_id TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C";
ALTER TABLE hold_releases
    ALTER COLUMN request_id TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C";
