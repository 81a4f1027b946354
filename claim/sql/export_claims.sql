-- One page of a pool's claims in claim order, after the (claimed_at, id) of
-- the previous page. Each page is its own short statement, so an export of
-- millions of claims never holds a transaction open. Open holds are not
-- claims.
SELECT c.id, c.request_id, c.user_id, c.code_id, k.code, k.expires_at, c.claimed_at
FROM claims c JOIN codes k ON k.id = c.code_id
WHERE c.pool_id = $1 AND c.held_until IS NULL
  AND c.claimed_at >= $2 AND c.claimed_at < $3
  AND (c.claimed_at, c.id) > ($4, $5)
ORDER BY c.claimed_at, c.id
LIMIT $6
