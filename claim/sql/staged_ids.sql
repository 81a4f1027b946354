SELECT id FROM codes WHERE pool_id = $1 AND state = 'staged' AND id = ANY($2)
