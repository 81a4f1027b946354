-- Rows go in code order, the order of the unique index, so index pages are
-- filled one after the other instead of at random (much less I/O than a
-- plain COPY). Among equal codes the earliest line wins; a code the pool
-- already holds, or an earlier line of this file brought, is skipped.
--
-- A plain INSERT of the codes the pool lacks (an anti-join, which the
-- planner makes a merge of the sorted rows with the pool's range of the
-- unique index), not ON CONFLICT DO NOTHING: that inserts every row
-- speculatively, probing the index first and writing a second WAL record to
-- confirm the row: landing a million codes took a fifth longer, re-importing
-- them twice as long (docs/BENCHMARKS.md, "Bulk import"). The planner
-- needs the staged rows' statistics (analyzeStagedSQL) to choose the merge;
-- for a few rows into a large pool it probes the index per row. The caller
-- holds the pool's import lock (import_lock_pool.sql), and imports and
-- generation are the only writers of new codes, so nothing inserts into the
-- pool between the anti-join and the insert; if anything ever did, the
-- unique index would fail the whole import rather than let a code in twice.
INSERT INTO codes (pool_id, code, expires_at, import_id)
SELECT $1, r.code, r.expires_at, $2
FROM (SELECT DISTINCT ON (code) code, expires_at FROM import_rows ORDER BY code, line) r
WHERE NOT EXISTS (SELECT 1 FROM codes k WHERE k.pool_id = $1 AND k.code = r.code)
ORDER BY r.code
