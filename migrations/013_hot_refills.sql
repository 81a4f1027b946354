-- A refill's write to codes (available to staged) becomes a HOT update too,
-- as a claim's did in migration 012: no index of codes names a column that
-- a refill or a claim changes. Before, codes_pickable_idx named the stored
-- column pickable (state = 'available') in its predicate, so every staged
-- code wrote a new entry into each index of codes (the primary key, the
-- pool's unique code index), splitting their pages, in the refill's one
-- transaction: about a quarter of PostgreSQL's CPU per claim of a flash
-- sale (docs/BENCHMARKS.md, round eighteen).
--
-- codes.state stays the truth for every statement. How available codes are
-- found changes:
-- * each pool has a cursor (stage_cursors.after_id): every available code of
--   the pool has an id above it, or a row in code_returns. A refill walks
--   the pool's codes above the cursor through codes_pool_id_idx (pool_id,
--   id), and then, under the cursor row's lock (refills of a pool take
--   turns), moves the cursor to just below the first code above it that is
--   still available (or, when none is, to the pool's highest id), as read
--   after its own update: a code that a fallback claim holds locked, or one
--   about to expire, stops the cursor below it;
-- * a code that becomes available again (a refused pop given back, a hold
--   released, reconcile returning a batch) gets a row in code_returns from
--   the trigger below, in the same transaction, wherever the cursor is.
--   Refills take returned codes first, in batches of their own (a batch's id
--   range then spans returned codes only); the fallback after the codes
--   above the cursor. A row whose code is no longer available is dropped by
--   whoever takes the code, or by reconcile;
-- * imports and generation insert new codes only under the pool's import
--   lock, held to commit, and ids come from one sequence: a pool's new codes
--   always have ids above every code it held, so above its cursor.
--
-- fillfactor 50: a refill updates every row of a run of pages in one
-- transaction, so a page needs room for a second version of each of its
-- rows before the first versions can be pruned. It applies to pages written
-- from now on (imports); pages written before keep 70% and rewrite some of
-- their rows out of place until they are rewritten.
ALTER TABLE codes SET (fillfactor = 50);

CREATE TABLE stage_cursors (
    pool_id  text PRIMARY KEY REFERENCES pools (id),
    after_id bigint NOT NULL DEFAULT 0 CHECK (after_id >= 0)
);

CREATE TABLE code_returns (
    pool_id text NOT NULL,
    code_id bigint NOT NULL,
    PRIMARY KEY (pool_id, code_id)
);

CREATE FUNCTION dispenser_code_returned_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO code_returns (pool_id, code_id) VALUES (NEW.pool_id, NEW.id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER codes_returned AFTER UPDATE OF state ON codes
    FOR EACH ROW WHEN (NEW.state = 'available' AND OLD.state <> 'available')
    EXECUTE FUNCTION dispenser_code_returned_v1();

CREATE INDEX codes_pool_id_idx ON codes (pool_id, id);

-- Each pool's cursor: just below its first available code, else its
-- highest id.
INSERT INTO stage_cursors (pool_id, after_id)
SELECT p.id, coalesce((SELECT min(k.id) - 1 FROM codes k WHERE k.pool_id = p.id AND k.pickable),
                      (SELECT max(k.id) FROM codes k WHERE k.pool_id = p.id), 0)
FROM pools p;

-- The column pickable stays, unindexed, for replicas of the previous
-- version during a rolling deploy: their refill still finds codes with it
-- (through codes_pool_id_idx, reading past the pool's taken codes, so
-- slowly), and staging breaks no rule above. A later migration drops it.
DROP INDEX codes_pickable_idx;
