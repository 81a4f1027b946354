-- One claim straight from Postgres: pool $1, request $2, user $3, scan hint
-- $4, attempt start $5, refusals kept for $6. See dispenser_claim_fallback.
SELECT outcome, code_id, code, expires_at, claimed_at
FROM dispenser_claim_fallback_v1($1, $2, $3, $4, $5, $6)
