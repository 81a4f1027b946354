-- Rows go in code order, the order of the unique index, so index pages are
-- filled one after the other instead of at random (much less I/O than a
-- plain COPY). Among equal codes the earliest line wins; a code the pool
-- already holds, or an earlier line of this file brought, is skipped.
INSERT INTO codes (pool_id, code, expires_at, import_id)
SELECT $1, code, expires_at, $2 FROM import_rows
ORDER BY code, line
ON CONFLICT (pool_id, code) DO NOTHING
