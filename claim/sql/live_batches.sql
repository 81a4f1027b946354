-- Which of the batch ids $2 still have staged codes in pool $1.
SELECT b.id FROM stage_batches b
WHERE b.pool_id = $1 AND b.id = ANY($2) AND b.drained_at IS NULL
  AND EXISTS (SELECT 1 FROM codes k WHERE k.id BETWEEN b.first_id AND b.last_id AND k.stage_batch = b.id)
