INSERT INTO pools (id, display_name, paused, claim_starts_at, claim_ends_at, per_user_limit,
                   refill_low_water, refill_batch_size, webhook_url, webhook_secret,
                   hold_default_seconds, hold_max_seconds, holds_per_user, redis_shards)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
RETURNING created_at, updated_at
