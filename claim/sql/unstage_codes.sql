-- Return staged codes whose claim never committed. Conditional: a code that
-- a claim committed meanwhile is 'claimed' and stays so.
UPDATE codes SET state = 'available', stage_batch = NULL, changed_at = now()
WHERE pool_id = $1 AND state = 'staged' AND id = ANY($2)
