-- claims_pool_time_idx (pool_id, claimed_at, id) serves exports, which read
-- a pool's claims in claim order and never open holds. Its leading pool_id
-- also let the planner use it for the claim path's probes (a request's
-- claim, a user's claims: pool_id and request_id, or pool_id and user_id),
-- reading every claim of the pool and filtering. It did so in the flash-sale
-- bench with UUID ids, on a claims table not yet analyzed: a group commit
-- plan cached with that choice read the pool's claims twice per item, for
-- the whole sale, and Postgres spent ten times its usual CPU per claim
-- (docs/BENCHMARKS.md, round nine). As a partial index over claims that are
-- not open holds, the planner can use it only for statements that say
-- held_until IS NULL, as exports do and the probes never do. It also leaves
-- the open holds out of it.
-- Rebuilds the index under a lock that makes claims wait (about 1 s per
-- million claims here): run `dispenserd migrate` outside a sale.
DROP INDEX claims_pool_time_idx;
CREATE INDEX claims_pool_time_idx ON claims (pool_id, claimed_at, id) WHERE held_until IS NULL;
