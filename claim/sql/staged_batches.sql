-- Batches of pool $1 on Redis shard $3 that still have staged codes and were
-- staged before $2.
SELECT DISTINCT k.stage_batch
FROM codes k JOIN stage_batches b ON b.id = k.stage_batch
WHERE k.pool_id = $1 AND k.state = 'staged' AND b.staged_at < $2 AND b.shard = $3
