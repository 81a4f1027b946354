SELECT id, display_name, paused, claim_starts_at, claim_ends_at, per_user_limit,
       refill_low_water, refill_batch_size, webhook_url, webhook_secret,
       hold_default_seconds, hold_max_seconds, holds_per_user, redis_shards, created_at, updated_at
FROM pools
WHERE id = $1
