-- The classic claim (classic.sql) on a sold-out table: the same transaction
-- up to the pick, which finds no available code, so there is no claim to
-- insert and the caller is told the pool is sold out.
\set n random(1, 9000000000000000)
BEGIN;
SELECT k.code FROM classic_claims c JOIN classic_codes k ON k.id = c.code_id WHERE c.request_id = 'r' || :client_id || '-' || :n;
WITH picked AS (
    SELECT id FROM classic_codes WHERE state = 'available' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
)
UPDATE classic_codes k SET state = 'claimed', claimed_at = now() FROM picked WHERE k.id = picked.id
RETURNING k.id AS code_id;
END;
