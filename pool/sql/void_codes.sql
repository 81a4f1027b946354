-- Void listed codes of pool $1 that no claim holds, with reason $3. One
-- statement: the UPDATE re-checks each row's state, so a code claimed at this
-- very moment stays claimed. Returns voided, already void, found, listed.
WITH input AS (
    SELECT DISTINCT code FROM unnest($2::text[]) AS t(code)
), found AS (
    SELECT k.id, k.state FROM codes k JOIN input i ON k.pool_id = $1 AND k.code = i.code
), upd AS (
    UPDATE codes k SET state = 'void', void_reason = $3, stage_batch = NULL, changed_at = now()
    FROM found f
    WHERE k.id = f.id AND k.state IN ('available', 'staged')
    RETURNING k.id
)
SELECT (SELECT count(*) FROM upd),
       (SELECT count(*) FROM found WHERE state = 'void'),
       (SELECT count(*) FROM found),
       (SELECT count(*) FROM input)
