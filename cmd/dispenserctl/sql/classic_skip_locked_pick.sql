-- One SKIP LOCKED transaction per claim.
WITH picked AS (
    SELECT id FROM codes
    WHERE pool_id = $1 AND state = 'available' AND (pool_id, id) > ($1, 0)
    ORDER BY pool_id, id LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE codes k SET state = 'claimed', changed_at = now() FROM picked WHERE k.id = picked.id
RETURNING k.id, k.code
