-- Ready prizes per pool ('' for every pool).
SELECT pool_id, count(*)::int FROM prizes
WHERE state = 'ready' AND ($1 = '' OR pool_id = $1)
GROUP BY pool_id
