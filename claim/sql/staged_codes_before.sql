-- Staged codes of pool $1 in batches on Redis shard $3 staged before $2.
SELECT k.id
FROM codes k JOIN stage_batches b ON b.id = k.stage_batch
WHERE k.pool_id = $1 AND k.state = 'staged' AND b.staged_at < $2 AND b.shard = $3
