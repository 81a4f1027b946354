-- A prize as the API shows it: with its code (through its claim) and its
-- delivery, in one place for every read.
CREATE VIEW prize_details AS
SELECT p.id, p.pool_id, p.user_id, p.external_id,
       p.metadata::text AS metadata, coalesce(p.details::text, '') AS details,
       p.state::text AS state, coalesce(k.code, '') AS code,
       coalesce(d.id::text, '') AS delivery_id, coalesce(d.attempts, 0) AS attempts,
       p.park_reason, coalesce(d.last_error, '') AS last_error,
       p.created_at, p.ready_at, p.assigned_at, p.delivered_at, d.next_attempt_at
FROM prizes p
LEFT JOIN claims c ON c.id = p.claim_id
LEFT JOIN codes k ON k.id = c.code_id
LEFT JOIN deliveries d ON d.prize_id = p.id;
