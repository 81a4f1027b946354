-- Return the staged codes of batches Redis no longer holds.
UPDATE codes SET state = 'available', stage_batch = NULL, changed_at = now()
WHERE pool_id = $1 AND state = 'staged' AND stage_batch = ANY($2)
