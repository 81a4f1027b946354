SELECT id, pool_id, user_id, external_id, metadata, details, state, code, delivery_id, attempts,
       park_reason, last_error, created_at, ready_at, assigned_at, delivered_at, next_attempt_at
FROM prize_details WHERE id = $1
