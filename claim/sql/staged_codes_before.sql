-- Staged codes of pool $1 in batches on Redis shard $3 staged before $2.
SELECT k.id
FROM stage_batches b JOIN codes k ON k.id BETWEEN b.first_id AND b.last_id AND k.stage_batch = b.id
WHERE b.pool_id = $1 AND b.drained_at IS NULL AND b.staged_at < $2 AND b.shard = $3
