SELECT ord, outcome, code_id, code, expires_at, claimed_at, user_id
FROM dispenser_claim_staged($1, $2, $3, $4)
