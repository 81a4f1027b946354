-- Mark a picked code claimed, only if it still is available.
UPDATE codes SET state = 'claimed', changed_at = now() WHERE id = $1 AND state = 'available'
