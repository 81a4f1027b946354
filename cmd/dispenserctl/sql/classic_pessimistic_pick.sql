-- The classic pessimistic claim: lock the first available row and wait for it.
SELECT id, code FROM codes WHERE pool_id = $1 AND state = 'available' ORDER BY id LIMIT 1 FOR UPDATE
