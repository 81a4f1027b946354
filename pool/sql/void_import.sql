-- Void every unclaimed code that import $2 brought into pool $1. Returns
-- voided, already void, and all codes of the import.
WITH found AS (
    SELECT id, state FROM codes WHERE pool_id = $1 AND import_id = $2
), upd AS (
    UPDATE codes k SET state = 'void', void_reason = $3, stage_batch = NULL, changed_at = now()
    FROM found f
    WHERE k.id = f.id AND k.state IN ('available', 'staged')
    RETURNING k.id
)
SELECT (SELECT count(*) FROM upd),
       (SELECT count(*) FROM found WHERE state = 'void'),
       (SELECT count(*) FROM found),
       (SELECT count(*) FROM found)
