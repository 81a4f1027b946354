-- A parked prize goes back to the queue: to 'ready' if it never got a code,
-- else to 'assigned', to be sent again with the same code and delivery id.
-- Returns how many prizes changed (0 or 1).
WITH p AS (
    UPDATE prizes
    SET state = CASE WHEN claim_id IS NULL THEN 'ready'::prize_state ELSE 'assigned'::prize_state END,
        park_reason = '', updated_at = now()
    WHERE id = $1 AND state = 'failed'
    RETURNING id
), d AS (
    UPDATE deliveries d SET attempts = 0, next_attempt_at = now(), updated_at = now()
    FROM p WHERE d.prize_id = p.id
    RETURNING d.id
)
SELECT count(*) FROM p
