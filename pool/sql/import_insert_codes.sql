-- Rows go in file order, so the first of two equal lines wins; a code the pool
-- already holds, or an earlier line of this file brought, is skipped.
INSERT INTO codes (pool_id, code, expires_at, import_id)
SELECT $1, code, expires_at, $2 FROM import_rows
ON CONFLICT (pool_id, code) DO NOTHING
