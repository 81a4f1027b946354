-- The promises, counted in one snapshot for pool $1.
SELECT
    (SELECT coalesce(sum(inserted), 0)::bigint FROM imports WHERE pool_id = $1) AS imported,
    count(*) FILTER (WHERE k.state = 'available') AS available,
    count(*) FILTER (WHERE k.state = 'staged') AS staged,
    count(*) FILTER (WHERE k.state = 'held') AS held,
    count(*) FILTER (WHERE k.state = 'claimed') AS claimed,
    count(*) FILTER (WHERE k.state = 'void') AS void,
    -- a code with more than one claim (the constraint forbids it)
    (SELECT count(*) FROM (SELECT code_id FROM claims WHERE pool_id = $1
                           GROUP BY code_id HAVING count(*) > 1) d) AS multi_claimed,
    -- a claim whose code is missing or not in state claimed, or a hold whose
    -- code is not in state held
    (SELECT count(*) FROM claims c LEFT JOIN codes x ON x.id = c.code_id
     WHERE c.pool_id = $1 AND (x.id IS NULL OR x.state <> CASE WHEN c.held_until IS NULL
                                                              THEN 'claimed' ELSE 'held' END::code_state)) AS claims_on_unclaimed,
    -- a code in state claimed or held that no claim or hold holds
    count(*) FILTER (WHERE k.state IN ('claimed', 'held')
                     AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.code_id = k.id)) AS claimed_without_claim,
    -- a staged code that no lookup of staged codes finds (they read the
    -- live batches' id ranges, migrations/012_hot_claims.sql): its batch is
    -- missing, of another pool or drained, or its id is outside the
    -- batch's range. Reconcile could never return it: lost.
    count(*) FILTER (WHERE k.state = 'staged'
                     AND NOT EXISTS (SELECT 1 FROM stage_batches b
                                     WHERE b.id = k.stage_batch AND b.pool_id = k.pool_id AND b.drained_at IS NULL
                                       AND k.id BETWEEN b.first_id AND b.last_id)) AS staged_unfindable,
    -- an available code that neither a refill nor the fallback finds: at or
    -- below the pool's cursor, without a row in code_returns
    -- (migrations/013_hot_refills.sql). It would never be issued: lost.
    count(*) FILTER (WHERE k.state = 'available'
                     AND k.id <= (SELECT coalesce(max(c.after_id), 0) FROM stage_cursors c WHERE c.pool_id = $1)
                     AND NOT EXISTS (SELECT 1 FROM code_returns r
                                     WHERE r.pool_id = k.pool_id AND r.code_id = k.id)) AS available_unfindable,
    -- users holding more claims than the highest limit the pool has had (a
    -- lowered limit leaves users the claims they held)
    (SELECT count(*) FROM (SELECT user_id FROM claims WHERE pool_id = $1 GROUP BY user_id
                           HAVING count(*) > (SELECT per_user_limit_peak FROM pools WHERE id = $1)) u) AS users_over_limit,
    (SELECT count(*) FROM claims WHERE pool_id = $1) AS claims,
    -- a prize whose code is not its own claim's: the claim is missing, of
    -- another pool or user, or not made for this prize (a caller's claim)
    (SELECT count(*) FROM prizes p LEFT JOIN claims c ON c.id = p.claim_id
     WHERE p.pool_id = $1 AND p.claim_id IS NOT NULL
       AND (c.id IS NULL OR c.pool_id <> p.pool_id OR c.user_id <> p.user_id
            OR c.request_id <> E'\x01prize:' || p.id)) AS prizes_astray,
    -- a claim in the prizes' id space whose prize is missing, of another
    -- pool or user, or holds another claim
    (SELECT count(*) FROM claims c
     LEFT JOIN prizes p ON p.id = substr(c.request_id, 8)::bigint
     WHERE c.pool_id = $1 AND left(c.request_id, 1) = E'\x01'
       AND (p.id IS NULL OR p.pool_id <> c.pool_id OR p.user_id <> c.user_id
            OR p.claim_id IS DISTINCT FROM c.id AND p.state IN ('assigned', 'delivered'))) AS prize_claims_astray
FROM codes k
WHERE k.pool_id = $1
