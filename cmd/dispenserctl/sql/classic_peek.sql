-- The classic optimistic claim, step 1: read a candidate without a lock.
SELECT id, code FROM codes WHERE pool_id = $1 AND state = 'available' ORDER BY id LIMIT 1
