SELECT c.user_id, c.code_id, k.code, k.expires_at, c.claimed_at
FROM claims c JOIN codes k ON k.id = c.code_id
WHERE c.pool_id = $1 AND c.request_id = $2
