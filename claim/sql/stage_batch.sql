-- Move up to $3 available codes of pool $1 to 'staged' under batch $2, in id
-- order. The CTE picks with SKIP LOCKED so a refill never waits for a
-- fallback claim; the UPDATE is bounded by what the CTE picked (PostgreSQL bug
-- #15715: an IN (subquery ... SKIP LOCKED LIMIT n) can update more than n).
-- Codes that expire within a minute are left for the expiry sweep. The row
-- comparisons keep the planner on the pool's range of codes_available_idx
-- (see plan_test.go).
WITH picked AS (
    SELECT id FROM codes
    WHERE state = 'available' AND (pool_id, id) > ($1, 0) AND (pool_id, id) <= ($1, 9223372036854775807)
      AND (expires_at IS NULL OR expires_at > now() + interval '1 minute')
    ORDER BY pool_id, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE codes k SET state = 'staged', stage_batch = $2, changed_at = now()
FROM picked WHERE k.id = picked.id
RETURNING k.id, k.code
