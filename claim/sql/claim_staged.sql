-- One group commit: items $1..$5 (pool, request, user, code id, attempt
-- start), refusals kept for $6. See dispenser_claim_staged.
SELECT ord, outcome, code_id, code, expires_at, claimed_at
FROM dispenser_claim_staged_v1($1, $2, $3, $4, $5, $6)
