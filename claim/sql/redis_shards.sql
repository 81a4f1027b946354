-- The Redis shards of pool $1 that may hold its codes, in order: those its
-- claims pop from (0 to redis_shards - 1) and any other that still has
-- batches with staged codes (the pool's shard count was lowered).
SELECT s::int FROM generate_series(0, (SELECT redis_shards - 1 FROM pools WHERE id = $1)) s
UNION
SELECT b.shard::int FROM stage_batches b
WHERE b.pool_id = $1 AND b.drained_at IS NULL
  AND EXISTS (SELECT 1 FROM codes k WHERE k.id BETWEEN b.first_id AND b.last_id AND k.stage_batch = b.id)
ORDER BY 1
