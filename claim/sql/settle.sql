-- Postgres's answer for a request Redis refused: pool $1, request $2, user
-- $3, whether to decide the user's limit $4, attempt start $5, refusals kept
-- for $6. See dispenser_settle_v2.
SELECT outcome, code_id, code, expires_at, claimed_at, held_until, reserved_at, held
FROM dispenser_settle_v2($1, $2, $3, $4, $5, $6)
