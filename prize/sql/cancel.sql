UPDATE prizes SET state = 'cancelled', updated_at = now()
WHERE id = $1 AND state IN ('pending', 'ready')
