-- Postgres's answers for requests Redis refused, a batch in one
-- transaction: items $1..$5 (pool, request, user, whether to decide the
-- user's limit, attempt start), refusals kept for $6. One row per item.
-- See dispenser_settle_many_v1.
SELECT ord, outcome, code_id, code, expires_at, claimed_at, held_until, reserved_at, held
FROM dispenser_settle_many_v1($1, $2, $3, $4, $5, $6)
