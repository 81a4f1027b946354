-- Drop pool $1's rows of code_returns whose code is no longer available
-- (claimed by the fallback, voided, expired, staged again): the refill and
-- the fallback read past them otherwise. Each code's row is locked first
-- (FOR SHARE, rechecked on its newest version), so a code given back
-- meanwhile keeps its row; one another transaction is changing is skipped
-- until the next run (migrations/013_hot_refills.sql).
DELETE FROM code_returns r
WHERE r.pool_id = $1
  AND r.code_id IN (SELECT k.id FROM code_returns r2 JOIN codes k ON k.id = r2.code_id
                    WHERE r2.pool_id = $1 AND k.state <> 'available'
                    FOR SHARE OF k SKIP LOCKED)
