-- Expired codes are never handed out: void those no claim holds. A staged one
-- may still sit in Redis; when popped, Postgres refuses it. expiry_open
-- (migrations/012_hot_claims.sql) puts the statement on codes_expiring_idx.
UPDATE codes SET state = 'void', void_reason = 'expired', stage_batch = NULL, changed_at = now()
WHERE pool_id = $1 AND expiry_open AND state IN ('available', 'staged') AND expires_at <= now()
