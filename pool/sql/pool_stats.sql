-- One statement, so one snapshot: the counts add up at a single instant and
-- no transaction stays open.
SELECT
    (SELECT coalesce(sum(inserted), 0)::bigint FROM imports WHERE pool_id = $1) AS imported,
    (SELECT count(*) FROM imports WHERE pool_id = $1) AS imports,
    c.available, c.staged, c.held, c.claimed, c.void,
    (SELECT count(DISTINCT user_id) FROM claims WHERE pool_id = $1 AND held_until IS NULL) AS claimants,
    (SELECT count(*) FROM claims WHERE pool_id = $1 AND held_until IS NOT NULL AND held_until <= now()) AS holds_due,
    p.pending, p.ready, p.assigned, p.delivered, p.failed, p.cancelled,
    now() AS read_at,
    (SELECT coalesce(max(redis_shards), 1)::int FROM pools WHERE id = $1) AS redis_shards
FROM (
    SELECT count(*) FILTER (WHERE state = 'available') AS available,
           count(*) FILTER (WHERE state = 'staged') AS staged,
           count(*) FILTER (WHERE state = 'held') AS held,
           count(*) FILTER (WHERE state = 'claimed') AS claimed,
           count(*) FILTER (WHERE state = 'void') AS void
    FROM codes WHERE pool_id = $1
) c, (
    SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
           count(*) FILTER (WHERE state = 'ready') AS ready,
           count(*) FILTER (WHERE state = 'assigned') AS assigned,
           count(*) FILTER (WHERE state = 'delivered') AS delivered,
           count(*) FILTER (WHERE state = 'failed') AS failed,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled
    FROM prizes WHERE pool_id = $1
) p
