-- Fold pool $1's rows of maintained counts into one (their sum). Rows that
-- writers add meanwhile are not in this statement's snapshot and stay.
WITH gone AS (DELETE FROM pool_code_counts WHERE pool_id = $1 RETURNING *)
INSERT INTO pool_code_counts (pool_id, available, staged, held, claimed, void)
SELECT $1, sum(available), sum(staged), sum(held), sum(claimed), sum(void) FROM gone
HAVING count(*) > 0
