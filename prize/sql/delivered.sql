WITH p AS (
    UPDATE prizes SET state = 'delivered', delivered_at = now(), updated_at = now()
    WHERE id = $1 AND state = 'assigned'
    RETURNING id
)
UPDATE deliveries SET next_attempt_at = NULL, last_error = '', updated_at = now()
WHERE prize_id = $1
