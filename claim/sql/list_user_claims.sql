-- A user's claims in a pool, in claim order; open holds are not claims.
SELECT c.request_id, c.code_id, k.code, k.expires_at, c.claimed_at
FROM claims c JOIN codes k ON k.id = c.code_id
WHERE c.pool_id = $1 AND c.user_id = $2 AND c.held_until IS NULL
ORDER BY c.claimed_at, c.id
