-- Whether pool $1 has a staged code whose id is not in $2 (the ids Redis
-- holds, listed or in flight), read batch by batch: the live batches'
-- id ranges through the primary key (migrations/012_hot_claims.sql). A set
-- difference, hashed: "id <> ALL ($2)" compares every staged code with
-- every id Redis holds, and a claim that found the list empty while a
-- refill was staging thousands of codes, with hundreds in flight, spent
-- milliseconds of Postgres on it.
SELECT EXISTS (
    SELECT k.id
    FROM stage_batches b JOIN codes k ON k.id BETWEEN b.first_id AND b.last_id AND k.stage_batch = b.id
    WHERE b.pool_id = $1 AND b.drained_at IS NULL
    EXCEPT ALL
    SELECT unnest($2::bigint[])
)
