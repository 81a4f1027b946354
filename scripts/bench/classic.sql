-- The classic claim, as a competent engineer writes it, for pgbench: one
-- transaction per claim on a table of its own (scripts/bench/classic-schema.sql):
-- the replay check, a FOR UPDATE SKIP LOCKED pick served by the partial
-- index of available codes (selected in a CTE, PostgreSQL bug #15715), and
-- the claim under its unique constraints. Unique request and user ids.
\set n random(1, 9000000000000000)
BEGIN;
SELECT k.code FROM classic_claims c JOIN classic_codes k ON k.id = c.code_id WHERE c.request_id = 'r' || :client_id || '-' || :n;
WITH picked AS (
    SELECT id FROM classic_codes WHERE state = 'available' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
)
UPDATE classic_codes k SET state = 'claimed', claimed_at = now() FROM picked WHERE k.id = picked.id
RETURNING k.id AS code_id \gset
INSERT INTO classic_claims (request_id, user_id, code_id) VALUES ('r' || :client_id || '-' || :n, 'u' || :n, :code_id);
END;
