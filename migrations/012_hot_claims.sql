-- A claim's write to codes becomes a HOT update: PostgreSQL rewrites the row
-- in its page and touches no index, provided no indexed column (key or
-- partial-index predicate) changes value and the page has room. Before, two
-- indexes named codes.state in their predicates (codes_available_idx,
-- codes_staged_idx) and one its key and state (codes_expiring_idx), so every
-- claim wrote a new entry into each of the table's indexes
-- (docs/BENCHMARKS.md, rounds twelve and sixteen).
--
-- codes.state stays the truth for every statement. Only the ways jobs find
-- their rows change:
-- * available codes through codes_pickable_idx, whose predicate is a stored
--   generated column (state = 'available'): a claim turns 'staged' into
--   'claimed' or 'held', false to false, so the index is not touched;
-- * staged codes through their refill batch: each batch records the lowest
--   and highest id it staged (a batch takes codes only when it is made, and
--   a refused code goes back only into the batch it came from), so its
--   staged codes are the rows of that id range whose stage_batch is its id,
--   read through the primary key. A batch with no staged code left is marked
--   drained (it never gets one back) and leaves stage_batches_live_idx;
-- * codes that may expire through codes_expiring_idx, whose predicate is a
--   generated column that is NULL for codes without an expiry, so only the
--   claims of expiring codes change it.
--
-- The table is rewritten (the generated columns) under a lock that stops
-- claims, about 4.5 s per million codes here: run `dispenserd migrate`
-- outside a sale. Replicas of the previous version must not run against it:
-- their refills make batches without an id range, which the constraint
-- below refuses (they fail and stage nothing), and their refill's pick has
-- no index left; migrate, then replace every replica, in one short window.
ALTER TABLE stage_batches
    ADD COLUMN first_id bigint,
    ADD COLUMN last_id bigint,
    ADD COLUMN drained_at timestamptz;

UPDATE stage_batches b SET first_id = r.lo, last_id = r.hi
FROM (SELECT stage_batch, min(id) AS lo, max(id) AS hi FROM codes
      WHERE state = 'staged' GROUP BY stage_batch) r
WHERE r.stage_batch = b.id;
UPDATE stage_batches SET drained_at = now() WHERE first_id IS NULL;

ALTER TABLE stage_batches
    ADD CONSTRAINT stage_batches_range_check
        CHECK (drained_at IS NOT NULL OR (first_id IS NOT NULL AND last_id >= first_id));
CREATE INDEX stage_batches_live_idx ON stage_batches (pool_id, id) WHERE drained_at IS NULL;

ALTER TABLE codes
    ADD COLUMN pickable boolean GENERATED ALWAYS AS (state = 'available') STORED,
    ADD COLUMN expiry_open boolean
        GENERATED ALWAYS AS (CASE WHEN expires_at IS NOT NULL THEN state IN ('available', 'staged') END) STORED;

DROP INDEX codes_available_idx;
DROP INDEX codes_staged_idx;
DROP INDEX codes_expiring_idx;
CREATE INDEX codes_pickable_idx ON codes (pool_id, id) WHERE pickable;
CREATE INDEX codes_expiring_idx ON codes (expires_at) WHERE expiry_open;

-- Room in each page for the claimed version of its rows, so that the claim
-- stays in the page (HOT). Rows written from now on: imports and the
-- refill's staged versions.
ALTER TABLE codes SET (fillfactor = 70);
