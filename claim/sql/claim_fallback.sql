-- One claim or hold straight from Postgres: pool $1, request $2, user $3,
-- scan hint $4, attempt start $5, hold in milliseconds $6 (NULL for a
-- claim), refusals kept for $7, whether Redis failed $8. See
-- dispenser_claim_fallback_v3.
SELECT outcome, code_id, code, expires_at, claimed_at, held_until, reserved_at
FROM dispenser_claim_fallback_v3($1, $2, $3, $4, $5, $6, $7, $8)
