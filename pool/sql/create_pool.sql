-- The pool and its refill cursor (migrations/013_hot_refills.sql): no code
-- yet, so every code it gets is above 0.
WITH p AS (
    INSERT INTO pools (id, display_name, paused, claim_starts_at, claim_ends_at, per_user_limit,
                       refill_low_water, refill_batch_size, webhook_url, webhook_secret,
                       hold_default_seconds, hold_max_seconds, holds_per_user, redis_shards)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    RETURNING id, created_at, updated_at
), c AS (
    INSERT INTO stage_cursors (pool_id) SELECT id FROM p
)
SELECT created_at, updated_at FROM p
