UPDATE prizes SET state = 'ready', details = $2::jsonb, ready_at = now(), updated_at = now()
WHERE id = $1 AND state = 'pending'
