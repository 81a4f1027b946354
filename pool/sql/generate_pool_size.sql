-- The codes pool $1 holds, in every state: each is a target for a guesser.
SELECT coalesce(sum(inserted), 0)::bigint FROM imports WHERE pool_id = $1
