-- Whether pool $1 has a staged code whose id is not in $2 (the ids Redis
-- holds, listed or in flight), read through codes_staged_idx. A set
-- difference, hashed: "id <> ALL ($2)" compares every staged code with
-- every id Redis holds, and a claim that found the list empty while a
-- refill was staging thousands of codes, with hundreds in flight, spent
-- milliseconds of Postgres on it.
SELECT EXISTS (
    SELECT id FROM codes WHERE pool_id = $1 AND state = 'staged'
    EXCEPT ALL
    SELECT unnest($2::bigint[])
)
