-- Lease a batch of due deliveries: each gets a later next attempt (the lease)
-- and one more attempt counted, in one short transaction, before anything is
-- sent. A runner that dies leaves them to be retried when the lease ends.
WITH due AS (
    SELECT d.id FROM deliveries d JOIN prizes p ON p.id = d.prize_id
    WHERE p.state = 'assigned' AND ($1 = '' OR p.pool_id = $1) AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d SET next_attempt_at = now() + $3::interval, attempts = d.attempts + 1, updated_at = now()
FROM due WHERE d.id = due.id
RETURNING d.id::text, d.prize_id, d.attempts
