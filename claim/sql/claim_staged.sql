-- One group commit: items $1..$6 (pool, request, user, code id, attempt
-- start, hold in milliseconds or NULL for a claim), refusals kept for $7.
-- See dispenser_claim_staged_v2.
SELECT ord, outcome, code_id, code, expires_at, claimed_at, held_until, reserved_at
FROM dispenser_claim_staged_v2($1, $2, $3, $4, $5, $6, $7)
