-- The existing prize of (pool, external_id), and whether a repeat with these
-- fields is the same record (metadata compared as JSON, not as text).
SELECT id, user_id = $3 AND metadata = $4::jsonb
FROM prizes WHERE pool_id = $1 AND external_id = $2
