-- Keyset pages of a pool's prizes, optionally of one state ('' for all).
SELECT id, pool_id, user_id, external_id, metadata, details, state, code, delivery_id, attempts,
       park_reason, last_error, created_at, ready_at, assigned_at, delivered_at, next_attempt_at
FROM prize_details
WHERE pool_id = $1 AND ($2 = '' OR state = $2) AND id > $3
ORDER BY id
LIMIT $4
