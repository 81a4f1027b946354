UPDATE pools
SET display_name = $2, paused = $3, claim_starts_at = $4, claim_ends_at = $5,
    per_user_limit = $6, refill_low_water = $7, refill_batch_size = $8,
    webhook_url = $9, webhook_secret = $10,
    hold_default_seconds = $11, hold_max_seconds = $12, holds_per_user = $13, redis_shards = $14, updated_at = now()
WHERE id = $1
RETURNING updated_at
