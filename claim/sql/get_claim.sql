-- The claim of request $2 in pool $1. An open hold is found too, so that it
-- can be told from no claim at all, but its code never leaves Postgres.
SELECT c.user_id, c.held_until IS NOT NULL AS held,
       c.code_id, CASE WHEN c.held_until IS NULL THEN k.code END, k.expires_at, c.claimed_at
FROM claims c JOIN codes k ON k.id = c.code_id
WHERE c.pool_id = $1 AND c.request_id = $2
