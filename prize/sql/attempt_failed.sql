-- A failed attempt: try again at $2, or park when $2 is NULL (no attempts
-- left). last_error never holds the code or the receiver's body.
WITH d AS (
    UPDATE deliveries SET next_attempt_at = $2, last_error = $3, updated_at = now()
    WHERE prize_id = $1
    RETURNING prize_id
)
UPDATE prizes SET state = 'failed', park_reason = $4, updated_at = now()
WHERE id = $1 AND state = 'assigned' AND $2::timestamptz IS NULL
