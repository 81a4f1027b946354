-- The claim decision, in Postgres: whatever Redis says, these functions and the
-- claims table's constraints decide. Both paths (Redis group commit and the
-- SKIP LOCKED fallback) end in dispenser_take_slot, so promises 1, 4 and 5
-- hold the same way on either.

-- Refill batches staged into Redis. Reconciliation compares them with the
-- batch markers Redis still holds.
CREATE TABLE stage_batches (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool_id   text NOT NULL REFERENCES pools (id),
    size      integer NOT NULL CHECK (size > 0),
    staged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stage_batches_pool_idx ON stage_batches (pool_id, id);

-- dispenser_take_slot inserts the claim of a code the caller has already
-- marked 'claimed' in this transaction. It returns:
--   'claimed'  the claim is in; claimed_at is set;
--   'replay'   (pool, request_id) already has a claim (a concurrent retry);
--   'limit'    the user holds per_user_limit claims;
--   'refused'  the code already has another claim.
-- On 'replay' and 'limit' the code is put back to 'available'. Slots are
-- unique per (pool, user), so two concurrent claims never share one: the
-- loser of a race sees the conflict and tries the next slot.
CREATE FUNCTION dispenser_take_slot(p_pool text, p_request text, p_user text, p_code bigint,
                                    OUT outcome text, OUT claimed_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    lim  integer;
    slot integer;
BEGIN
    SELECT per_user_limit INTO lim FROM pools WHERE id = p_pool;
    LOOP
        SELECT s INTO slot FROM generate_series(1, lim) AS s
        WHERE NOT EXISTS (SELECT 1 FROM claims c
                          WHERE c.pool_id = p_pool AND c.user_id = p_user AND c.user_slot = s)
        ORDER BY s LIMIT 1;
        IF slot IS NULL THEN
            UPDATE codes SET state = 'available', changed_at = now() WHERE id = p_code;
            outcome := 'limit';
            RETURN;
        END IF;
        INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id)
        VALUES (p_pool, p_request, p_user, slot, p_code)
        ON CONFLICT DO NOTHING
        RETURNING claims.claimed_at INTO claimed_at;
        IF FOUND THEN
            outcome := 'claimed';
            RETURN;
        END IF;
        IF EXISTS (SELECT 1 FROM claims c WHERE c.pool_id = p_pool AND c.request_id = p_request) THEN
            UPDATE codes SET state = 'available', changed_at = now()
            WHERE id = p_code AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.code_id = p_code);
            outcome := 'replay';
            RETURN;
        END IF;
        IF EXISTS (SELECT 1 FROM claims c WHERE c.code_id = p_code) THEN
            -- The code already has a claim (it came twice in one batch): it
            -- stays with that claim, and this request needs another code.
            outcome := 'refused';
            RETURN;
        END IF;
        -- Another transaction took this slot first: look again.
    END LOOP;
END;
$$;

-- dispenser_claim_staged persists a group commit: item i claims code
-- p_code[i] (popped from Redis, so 'staged') for request p_request[i] of
-- user p_user[i] in pool p_pool[i]. Every item gets its own outcome, and no
-- outcome fails the batch:
--   'claimed'  committed with the given code;
--   'replay'   the request already had a claim: its code is returned, and the
--              given code, if different, goes back to 'available';
--   'limit'    the user is at the pool's limit; the code goes back;
--   'refused'  the code is no longer staged (claimed, void, expired or
--              reconciled): the caller claims again with another code.
CREATE FUNCTION dispenser_claim_staged(p_pool text[], p_request text[], p_user text[], p_code bigint[])
RETURNS TABLE (ord integer, outcome text, code_id bigint, code text, expires_at timestamptz,
               claimed_at timestamptz, user_id text)
LANGUAGE plpgsql AS $$
DECLARE
    n     integer := coalesce(array_length(p_request, 1), 0);
    done  boolean[] := array_fill(false, ARRAY[n]);
    i     integer;
    r     record;
    f     record;
    taken record;
BEGIN
    -- Fast path, set-based: fresh requests of users without a claim in the
    -- pool take their code and slot 1 in one UPDATE and one INSERT for the
    -- whole batch. The NOT EXISTS filters only pick candidates; the claims
    -- constraints decide, and whatever they refuse goes the slow way below.
    FOR f IN
        WITH input AS (
            SELECT * FROM unnest(p_pool, p_request, p_user, p_code) WITH ORDINALITY
                AS t(pool_id, request_id, user_id, code_id, ord)
        ), taken AS (
            UPDATE codes k SET state = 'claimed', stage_batch = NULL, changed_at = now()
            FROM input i
            WHERE k.id = i.code_id AND k.pool_id = i.pool_id AND k.state = 'staged'
              AND (k.expires_at IS NULL OR k.expires_at > now())
              AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.pool_id = i.pool_id AND c.request_id = i.request_id)
              AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.pool_id = i.pool_id AND c.user_id = i.user_id)
            RETURNING k.id, k.code, k.expires_at
        ), ins AS (
            INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id)
            SELECT i.pool_id, i.request_id, i.user_id, 1, t.id FROM input i JOIN taken t ON t.id = i.code_id
            ON CONFLICT DO NOTHING
            RETURNING claims.code_id, claims.request_id, claims.claimed_at
        )
        SELECT i.ord::integer AS ord, t.id, t.code, t.expires_at, ins.claimed_at
        FROM input i JOIN taken t ON t.id = i.code_id
        LEFT JOIN ins ON ins.code_id = t.id AND ins.request_id = i.request_id
    LOOP
        done[f.ord] := true;
        IF f.claimed_at IS NOT NULL THEN
            RETURN QUERY SELECT f.ord, 'claimed'::text, f.id, f.code, f.expires_at, f.claimed_at, p_user[f.ord];
            CONTINUE;
        END IF;
        -- The code is ours but the claim was refused (same user or request
        -- twice in the batch, or a concurrent claim): find a slot or put the
        -- code back.
        SELECT * INTO r FROM dispenser_take_slot(p_pool[f.ord], p_request[f.ord], p_user[f.ord], f.id);
        RETURN QUERY SELECT * FROM dispenser_staged_answer(f.ord, r.outcome, p_pool[f.ord], p_request[f.ord],
                                                           p_user[f.ord], f.id, f.code, f.expires_at, r.claimed_at);
    END LOOP;

    -- Slow path, per item: replays, refused codes, users with claims.
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN done[i];
        SELECT c.code_id, c.claimed_at, c.user_id, k.code, k.expires_at INTO r
        FROM claims c JOIN codes k ON k.id = c.code_id
        WHERE c.pool_id = p_pool[i] AND c.request_id = p_request[i];
        IF FOUND THEN
            IF r.code_id <> p_code[i] THEN
                UPDATE codes SET state = 'available', stage_batch = NULL, changed_at = now()
                WHERE id = p_code[i] AND state = 'staged';
            END IF;
            RETURN QUERY SELECT i, 'replay'::text, r.code_id, r.code, r.expires_at, r.claimed_at, r.user_id;
            CONTINUE;
        END IF;

        UPDATE codes k SET state = 'claimed', stage_batch = NULL, changed_at = now()
        WHERE k.id = p_code[i] AND k.pool_id = p_pool[i] AND k.state = 'staged'
          AND (k.expires_at IS NULL OR k.expires_at > now())
        RETURNING k.id, k.code, k.expires_at INTO taken;
        IF NOT FOUND THEN
            RETURN QUERY SELECT i, 'refused'::text, p_code[i], NULL::text, NULL::timestamptz, NULL::timestamptz, p_user[i];
            CONTINUE;
        END IF;
        SELECT * INTO r FROM dispenser_take_slot(p_pool[i], p_request[i], p_user[i], taken.id);
        RETURN QUERY SELECT * FROM dispenser_staged_answer(i, r.outcome, p_pool[i], p_request[i], p_user[i],
                                                           taken.id, taken.code, taken.expires_at, r.claimed_at);
    END LOOP;
END;
$$;

-- dispenser_staged_answer turns a dispenser_take_slot outcome into the row
-- dispenser_claim_staged returns for item p_ord.
CREATE FUNCTION dispenser_staged_answer(p_ord integer, p_outcome text, p_pool text, p_request text, p_user text,
                                        p_code_id bigint, p_code text, p_expires timestamptz, p_claimed timestamptz)
RETURNS TABLE (ord integer, outcome text, code_id bigint, code text, expires_at timestamptz,
               claimed_at timestamptz, user_id text)
LANGUAGE sql AS $$
    SELECT p_ord, 'claimed', p_code_id, p_code, p_expires, p_claimed, p_user WHERE p_outcome = 'claimed'
    UNION ALL
    SELECT p_ord, 'replay', c.code_id, k.code, k.expires_at, c.claimed_at, c.user_id
    FROM claims c JOIN codes k ON k.id = c.code_id
    WHERE p_outcome = 'replay' AND c.pool_id = p_pool AND c.request_id = p_request
    UNION ALL
    SELECT p_ord, p_outcome, p_code_id, NULL, NULL, NULL, p_user WHERE p_outcome IN ('limit', 'refused')
$$;

-- dispenser_claim_fallback claims one available code straight from Postgres,
-- in the caller's single transaction, for when Redis cannot serve. Outcomes:
-- 'claimed', 'replay' (the request's existing claim), 'limit', 'exhausted'
-- (no available code that no other claim holds a lock on). p_after is a hint:
-- codes with smaller ids were claimed recently, so the scan starts past them
-- and skips the dead index entries they left; if nothing is found past it,
-- the scan starts again from the beginning.
CREATE FUNCTION dispenser_claim_fallback(p_pool text, p_request text, p_user text, p_after bigint,
                                         OUT outcome text, OUT code_id bigint, OUT code text,
                                         OUT expires_at timestamptz, OUT claimed_at timestamptz,
                                         OUT user_id text)
LANGUAGE plpgsql AS $$
DECLARE
    lim   integer;
    held  integer;
    r     record;
    bound bigint := p_after;
BEGIN
    SELECT c.code_id, c.claimed_at, c.user_id, k.code, k.expires_at INTO r
    FROM claims c JOIN codes k ON k.id = c.code_id
    WHERE c.pool_id = p_pool AND c.request_id = p_request;
    IF FOUND THEN
        outcome := 'replay';
        code_id := r.code_id; code := r.code; expires_at := r.expires_at;
        claimed_at := r.claimed_at; user_id := r.user_id;
        RETURN;
    END IF;

    -- Refuse at the limit before touching any code.
    SELECT per_user_limit INTO lim FROM pools WHERE id = p_pool;
    SELECT count(*) INTO held FROM claims c WHERE c.pool_id = p_pool AND c.user_id = p_user;
    IF held >= lim THEN
        outcome := 'limit';
        RETURN;
    END IF;

    LOOP
        WITH picked AS (
            -- The row comparison can only be served by codes_available_idx
            -- (pool_id, id): a plain "id > bound" lets the planner take the
            -- primary key and re-read every claimed row (see plan_test.go).
            SELECT k.id FROM codes k
            WHERE k.pool_id = p_pool AND k.state = 'available' AND (k.pool_id, k.id) > (p_pool, bound)
              AND (k.expires_at IS NULL OR k.expires_at > now())
            ORDER BY k.pool_id, k.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE codes k SET state = 'claimed', changed_at = now()
        FROM picked WHERE k.id = picked.id
        RETURNING k.id, k.code, k.expires_at INTO r;
        EXIT WHEN FOUND;
        IF bound = 0 THEN
            outcome := 'exhausted';
            RETURN;
        END IF;
        bound := 0;
    END LOOP;

    code_id := r.id; code := r.code; expires_at := r.expires_at; user_id := p_user;
    SELECT t.outcome, t.claimed_at INTO outcome, claimed_at
    FROM dispenser_take_slot(p_pool, p_request, p_user, r.id) t;
    IF outcome = 'replay' THEN
        SELECT c.code_id, c.claimed_at, k.code, k.expires_at INTO code_id, claimed_at, code, expires_at
        FROM claims c JOIN codes k ON k.id = c.code_id
        WHERE c.pool_id = p_pool AND c.request_id = p_request;
    ELSIF outcome = 'limit' THEN
        code_id := NULL; code := NULL; expires_at := NULL;
    END IF;
END;
$$;
