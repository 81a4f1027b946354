-- Whether pool $1 has a staged code whose id is not in $2 (the ids Redis
-- holds, listed or in flight), read through codes_staged_idx.
SELECT EXISTS (SELECT 1 FROM codes WHERE pool_id = $1 AND state = 'staged' AND id <> ALL ($2::bigint[]))
