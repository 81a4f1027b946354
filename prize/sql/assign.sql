-- Mark prizes assigned to the claims made for them (request id
-- E'\x01prize:<id>', see claim.PrizeRequestID: no caller can send it) and
-- open their deliveries, with a delivery id fixed for every attempt. The
-- claim is found by (pool_id, request_id), its unique index, and must be the
-- prize's own user's.
WITH x AS (
    SELECT p.id, c.id AS claim_id
    FROM unnest($1::bigint[]) AS u(id)
    JOIN prizes p ON p.id = u.id
    JOIN claims c ON c.pool_id = p.pool_id AND c.request_id = E'\x01prize:' || p.id AND c.user_id = p.user_id
), a AS (
    UPDATE prizes p SET state = 'assigned', claim_id = x.claim_id, assigned_at = now(), updated_at = now()
    FROM x WHERE p.id = x.id AND p.state = 'ready'
    RETURNING p.id
)
INSERT INTO deliveries (id, prize_id, next_attempt_at)
SELECT gen_random_uuid(), a.id, now() FROM a
ON CONFLICT (prize_id) DO NOTHING
