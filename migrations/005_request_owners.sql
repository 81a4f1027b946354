-- Who owns a request id, and one answer per request id.
--
-- 1. A request id belongs to the user who first used it: a claim or a
--    refusal of (pool, request_id) is answered only to its own user; any
--    other user gets 'reused' and learns nothing of it.
-- 2. Prize claims live in an id space no caller can reach: their request id
--    is E'\x01prize:<prize id>'. Callers' request ids never hold a control
--    character (internal/input), and the check below keeps the reserved form
--    for prizes.
-- 3. A definite refusal (the user's limit, an exhausted pool) is recorded
--    like a claim, for a while (refusals.expires_at): a copy of the request
--    that started before it (and so may be about to commit a claim: popped
--    before Redis lost its replay record, say) sees it and refuses too, so
--    concurrent copies get one answer whatever Redis forgot. A retry that
--    starts after the refusal is decided afresh (the pool may have been
--    restocked). While it is kept, a refusal also reserves the request id
--    for its user, as a claim does for good.
-- Every path that decides a request (group commit, fallback, settle) first
-- takes the transaction-scoped advisory lock of (pool, request_id), so
-- "is there a claim or a refusal?" cannot change under it.

-- Prize claims made before this version used 'prize:<id>'; move the ones that
-- really are a prize's (same pool, same user) into the reserved space. A claim
-- a caller made with such an id stays a caller's claim, and the audit reports
-- any prize that points at it.
UPDATE claims c SET request_id = E'\x01prize:' || p.id
FROM prizes p
WHERE c.pool_id = p.pool_id AND c.request_id = 'prize:' || p.id AND c.user_id = p.user_id;

ALTER TABLE claims ADD CONSTRAINT claims_request_space CHECK (
    left(request_id, 1) <> E'\x01' OR request_id ~ E'^\x01prize:[1-9][0-9]{0,18}$');

-- A claim's code is updated in the claim's own transaction, and codes are
-- never deleted: the foreign key only added a lookup and a row lock to every
-- claim. The audit counts a claim whose code is missing.
ALTER TABLE claims DROP CONSTRAINT claims_code_id_fkey;

-- Definite refusals, kept until expires_at. No foreign key, as for claims.
CREATE TABLE refusals (
    pool_id    text NOT NULL,
    request_id text NOT NULL,
    user_id    text NOT NULL,
    reason     text NOT NULL CHECK (reason IN ('limit', 'exhausted')),
    refused_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (pool_id, request_id)
);
CREATE INDEX refusals_expiry_idx ON refusals (pool_id, expires_at);

-- This migration also replaced the claim functions of 002 with new
-- signatures, unsuffixed. Their bodies now live only in
-- migrations/functions.sql (as _v1, applied after every migration); a
-- database that ran 002 loses the old ones here.
DROP FUNCTION IF EXISTS dispenser_claim_fallback(text, text, text, bigint);
DROP FUNCTION IF EXISTS dispenser_claim_staged(text[], text[], text[], bigint[]);
DROP FUNCTION IF EXISTS dispenser_staged_answer(integer, text, text, text, text, bigint, text, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS dispenser_take_slot(text, text, text, bigint);
