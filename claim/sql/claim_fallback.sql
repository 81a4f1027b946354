SELECT outcome, code_id, code, expires_at, claimed_at, user_id
FROM dispenser_claim_fallback($1, $2, $3, $4)
