-- Fallback claims or holds straight from Postgres, a batch in one
-- transaction: items $1..$6 (pool, request, user, scan hint, attempt start,
-- hold in milliseconds or NULL for a claim), refusals kept for $7, whether
-- Redis failed for each item $8. One row per item. See
-- dispenser_claim_fallback_many_v1.
SELECT ord, outcome, code_id, code, expires_at, claimed_at, held_until, reserved_at
FROM dispenser_claim_fallback_many_v1($1, $2, $3, $4, $5, $6, $7, $8)
