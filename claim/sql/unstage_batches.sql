-- Return the staged codes of batches Redis no longer holds: each batch's id
-- range, through the primary key.
UPDATE codes k SET state = 'available', stage_batch = NULL, changed_at = now()
FROM stage_batches b
WHERE b.pool_id = $1 AND b.id = ANY($2)
  AND k.id BETWEEN b.first_id AND b.last_id AND k.stage_batch = b.id AND k.state = 'staged'
