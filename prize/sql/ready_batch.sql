-- A batch of ready prizes, locked for this run: an overlapping run skips them.
-- $1 is one pool or '' for all; $2 excludes pools this run skips (paused).
SELECT id, pool_id, user_id FROM prizes
WHERE state = 'ready' AND ($1 = '' OR pool_id = $1) AND pool_id <> ALL($2)
ORDER BY id
LIMIT $3
FOR UPDATE SKIP LOCKED
