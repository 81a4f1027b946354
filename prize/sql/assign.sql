-- Mark prizes assigned to the claims made for them (request id 'prize:<id>')
-- and open their deliveries, with a delivery id fixed for every attempt.
WITH a AS (
    UPDATE prizes p SET state = 'assigned', claim_id = c.id, assigned_at = now(), updated_at = now()
    FROM unnest($1::bigint[]) AS u(id)
    JOIN claims c ON c.request_id = 'prize:' || u.id
    WHERE p.id = u.id AND c.pool_id = p.pool_id AND p.state = 'ready'
    RETURNING p.id
)
INSERT INTO deliveries (id, prize_id, next_attempt_at)
SELECT gen_random_uuid(), a.id, now() FROM a
ON CONFLICT (prize_id) DO NOTHING
