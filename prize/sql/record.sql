-- Idempotent by (pool, external_id): a repeat inserts nothing.
INSERT INTO prizes (pool_id, user_id, external_id, metadata)
VALUES ($1, $2, $3, $4::jsonb)
ON CONFLICT (pool_id, external_id) DO NOTHING
RETURNING id
