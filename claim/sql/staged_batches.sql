-- Batches of pool $1 on Redis shard $3 that still have staged codes and were
-- staged before $2.
SELECT b.id FROM stage_batches b
WHERE b.pool_id = $1 AND b.drained_at IS NULL AND b.staged_at < $2 AND b.shard = $3
  AND EXISTS (SELECT 1 FROM codes k WHERE k.id BETWEEN b.first_id AND b.last_id AND k.stage_batch = b.id)
