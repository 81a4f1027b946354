-- Run in a void's transaction, before it: pool $1's refill cursor row
-- (migrations/013_hot_refills.sql). A refill holds it and waits for the
-- available codes it walks past that another transaction holds; a void
-- locks codes in no particular order. Taking the cursor first puts the two
-- in one order, so they cannot deadlock: a void waits for a refill under
-- way, or a refill for the void. A pool without the row (made by a replica
-- of the previous version, before its first refill) locks nothing.
SELECT 1 FROM stage_cursors WHERE pool_id = $1 FOR UPDATE
