-- Park prizes that cannot be assigned or delivered, with the reason.
UPDATE prizes SET state = 'failed', park_reason = $2, updated_at = now()
WHERE id = ANY($1) AND state IN ('ready', 'assigned')
