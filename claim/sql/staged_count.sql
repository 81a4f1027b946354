-- How many of pool $1's codes are staged (codes_staged_idx).
SELECT count(*) FROM codes WHERE pool_id = $1 AND state = 'staged'
