-- One group commit: items $1..$7 (pool, request, user, code id, attempt
-- start, hold in milliseconds or NULL for a claim, whether the item popped
-- its code or got it from a replay record), refusals kept for $8.
-- See dispenser_claim_staged_v3.
SELECT ord, outcome, code_id, code, expires_at, claimed_at, held_until, reserved_at
FROM dispenser_claim_staged_v3($1, $2, $3, $4, $5, $6, $7, $8)
