-- Limit 1 per user through the slot constraint; idempotency through the
-- request constraint.
INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id) VALUES ($1, $2, $3, 1, $4)
ON CONFLICT DO NOTHING
