-- Stage up to $3 available codes of pool $1 for Redis shard $2, in id order,
-- as one new refill batch: its row records the count and the lowest and
-- highest id it staged (how reconcile finds a batch's staged codes: see
-- migrations/012_hot_claims.sql). Returns the batch id with each code; no
-- row, no batch. The pick uses SKIP LOCKED so a refill never waits for a
-- fallback claim; the UPDATE is bounded by what the pick took (PostgreSQL
-- bug #15715: an IN (subquery ... SKIP LOCKED LIMIT n) can update more than
-- n). Codes that expire within a minute are left for the expiry sweep. The
-- row comparisons keep the planner on the pool's range of
-- codes_pickable_idx (see plan_test.go).
WITH batch AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('stage_batches', 'id')) AS id
), picked AS (
    SELECT id FROM codes
    WHERE pickable AND (pool_id, id) > ($1, 0) AND (pool_id, id) <= ($1, 9223372036854775807)
      AND (expires_at IS NULL OR expires_at > now() + interval '1 minute')
    ORDER BY pool_id, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), staged AS (
    UPDATE codes k SET state = 'staged', stage_batch = (SELECT id FROM batch), changed_at = now()
    FROM picked WHERE k.id = picked.id
    RETURNING k.id, k.code
), made AS (
    INSERT INTO stage_batches (id, pool_id, size, shard, first_id, last_id) OVERRIDING SYSTEM VALUE
    SELECT (SELECT id FROM batch), $1, count(*), $2, min(id), max(id)
    FROM staged HAVING count(*) > 0
)
SELECT (SELECT id FROM batch), id, code FROM staged
