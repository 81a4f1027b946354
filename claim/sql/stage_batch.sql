-- Stage up to $3 available codes of pool $1 for Redis shard $2, in id order,
-- as one new refill batch: its row records the count and the lowest and
-- highest id it staged (how reconcile finds a batch's staged codes: see
-- migrations/012_hot_claims.sql). Returns the batch id with each code's
-- id (the code itself stays in Postgres); no row, no batch. Run after
-- ensure_cursor.sql, in the same transaction.
--
-- Available codes are the pool's codes above its cursor and its returned
-- codes (migrations/013_hot_refills.sql). The cursor row is locked first, so
-- refills of a pool take turns.
-- * Returned codes go first, in a batch of their own (a batch's id range
--   stays narrow). Only when there are none does the refill walk
--   codes_pool_id_idx above the cursor (fresh).
-- * After a fresh walk the cursor moves to the highest id it took, or, when
--   the walk reached the pool's end, to the pool's highest id. The walk waits
--   for codes other transactions hold (see fresh), so every available code
--   it passes is one it staged, or one about to expire, which gets a row in
--   code_returns: none is left behind. A code made available meanwhile has
--   its row from the trigger, and a pool's codes not yet committed have ids
--   above every committed one (imports insert under the pool's lock).
-- * Rows of code_returns for the codes it staged are dropped.
-- The pick of returned codes uses SKIP LOCKED (a code a fallback claim
-- holds keeps its row). The UPDATE is bounded by what the picks took
-- (PostgreSQL bug #15715: an IN (subquery ... LIMIT n) with a locking
-- clause can update more than n). Codes that expire within a minute are
-- left for the expiry sweep. The row comparisons keep the planner on the
-- pool's range of codes_pool_id_idx (see plan_test.go).
WITH cur AS MATERIALIZED (
    SELECT after_id FROM stage_cursors WHERE pool_id = $1 FOR UPDATE
), batch AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('stage_batches', 'id')) AS id
), returned AS MATERIALIZED (
    SELECT k.id FROM code_returns r JOIN codes k ON k.id = r.code_id
    WHERE r.pool_id = $1 AND k.pool_id = $1 AND k.state = 'available'
      AND (k.expires_at IS NULL OR k.expires_at > now() + interval '1 minute')
    ORDER BY r.code_id
    LIMIT $3
    FOR UPDATE OF k SKIP LOCKED
), fresh AS MATERIALIZED (
    -- Locked without SKIP LOCKED: a code a fallback claim holds is waited
    -- for (one short transaction; with Redis up there are hardly any), then
    -- read again, so every code the walk passes is staged here, taken, or
    -- about to expire.
    SELECT id FROM codes
    WHERE state = 'available'
      AND (pool_id, id) > ($1, (SELECT after_id FROM cur)) AND (pool_id, id) <= ($1, 9223372036854775807)
      AND (expires_at IS NULL OR expires_at > now() + interval '1 minute')
    ORDER BY pool_id, id
    LIMIT $3
    FOR UPDATE
), picked AS (
    SELECT id FROM returned
    UNION ALL
    SELECT id FROM fresh WHERE NOT EXISTS (SELECT 1 FROM returned)
), staged AS (
    UPDATE codes k SET state = 'staged', stage_batch = (SELECT id FROM batch), changed_at = now()
    FROM picked WHERE k.id = picked.id
    RETURNING k.id
), made AS (
    INSERT INTO stage_batches (id, pool_id, size, shard, first_id, last_id) OVERRIDING SYSTEM VALUE
    SELECT (SELECT id FROM batch), $1, count(*), $2, min(id), max(id)
    FROM staged HAVING count(*) > 0
), gone AS (
    DELETE FROM code_returns r USING staged s WHERE r.pool_id = $1 AND r.code_id = s.id
), edge AS MATERIALIZED (
    -- Where the cursor goes; no row when returned codes were taken.
    SELECT CASE WHEN count(*) < $3
                THEN (SELECT k.id FROM codes k
                      WHERE (k.pool_id, k.id) > ($1, 0) AND (k.pool_id, k.id) <= ($1, 9223372036854775807)
                      ORDER BY k.pool_id DESC, k.id DESC LIMIT 1)
                ELSE max(f.id) END AS upto
    FROM fresh f WHERE NOT EXISTS (SELECT 1 FROM returned)
    HAVING NOT EXISTS (SELECT 1 FROM returned)
), passed AS (
    -- The codes about to expire that the cursor passes stay findable: few,
    -- read through codes_expiring_idx.
    INSERT INTO code_returns (pool_id, code_id)
    SELECT $1, k.id FROM codes k
    WHERE k.expiry_open AND k.expires_at <= now() + interval '1 minute'
      AND k.pool_id = $1 AND k.id > (SELECT after_id FROM cur) AND k.id <= (SELECT upto FROM edge)
      AND k.state = 'available'
    ON CONFLICT DO NOTHING
), moved AS (
    UPDATE stage_cursors c SET after_id = e.upto FROM edge e WHERE c.pool_id = $1 AND e.upto > c.after_id
)
SELECT (SELECT id FROM batch), id FROM staged
