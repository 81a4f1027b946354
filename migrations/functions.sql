-- The claim functions: their current bodies, and the only place to read or
-- change them. Migrate applies this file after the numbered migrations, every
-- time, with CREATE OR REPLACE, so a replica that starts always finds the
-- bodies it was built with.
--
-- Versions. Every name ends in _vN, the version of its contract (arguments,
-- outcomes, what it writes):
--   - a change that keeps the contract (a faster plan, a fix) edits the body
--     here; replicas of the same version that are still running call the
--     new body, which answers them as before;
--   - a change of contract copies the function to the next _vN here and the
--     Go code calls the new name; the old one stays in the database, so old
--     and new replicas run side by side during a rolling deploy, until a
--     numbered migration drops it (not before every replica runs the new
--     version).
-- Databases migrated by the version before this file still hold migration
-- 005's functions without a suffix, which that version's replicas call
-- during a rolling deploy; a later migration drops them.
--
-- Outcomes are the words of the outcome type in claim/claim.go.

-- The functions the Go code calls run with enable_seqscan off (a SET clause,
-- so every statement they run, nested functions' too, is planned so). Each
-- of their statements reads a few rows by index. PL/pgSQL caches a plan made
-- while refusals or hold_releases were empty, and the planner then chose a
-- sequential scan of them for every item; once a sale had refused thousands
-- of users at their limit, every claim read every refusal, until autovacuum
-- analyzed the table again, or forever with it off (measured: 15 ms instead
-- of 1 for three claims beside 50,000 refusals). claim/plan_test.go checks.

-- The advisory lock key of a request. Pool ids cannot hold '/', so the
-- joined text names one (pool, request) pair.
CREATE OR REPLACE FUNCTION dispenser_request_lock_v1(p_pool text, p_request text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtextextended(p_pool || '/' || p_request, 0)
$$;

-- dispenser_has_staged_v1: whether pool p_pool has a staged code, read
-- through its live refill batches' id ranges (migrations/012_hot_claims.sql).
-- Each range by an index scan of the primary key, which stops at the first
-- staged code: a bitmap scan, the planner's choice for a range of a table
-- never analyzed, reads the whole range first. PL/pgSQL, whose plan is
-- cached for the session: a SQL function with SET clauses is not inlined,
-- and its body was planned again at every call (0.2 ms per sold-out check).
CREATE OR REPLACE FUNCTION dispenser_has_staged_v1(p_pool text) RETURNS boolean
LANGUAGE plpgsql STABLE SET enable_seqscan = off SET enable_bitmapscan = off AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM stage_batches b
                   JOIN codes k ON k.id BETWEEN b.first_id AND b.last_id AND k.stage_batch = b.id
                   WHERE b.pool_id = p_pool AND b.drained_at IS NULL);
END;
$$;

-- dispenser_cursor_v1: pool p_pool's refill cursor (0 for a pool that has
-- none yet). Every available code of the pool has an id above it or a row
-- in code_returns (migrations/013_hot_refills.sql). PL/pgSQL, not SQL: a
-- SQL function whose body reads a table is not inlined, and was parsed and
-- planned again in every transaction that called it (about 50 µs of
-- Postgres's CPU per sold-out check and fallback batch; docs/BENCHMARKS.md,
-- round twenty-three), where PL/pgSQL keeps the statement's plan.
CREATE OR REPLACE FUNCTION dispenser_cursor_v1(p_pool text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cur bigint;
BEGIN
    SELECT c.after_id INTO cur FROM stage_cursors c WHERE c.pool_id = p_pool;
    RETURN coalesce(cur, 0);
END;
$$;

-- dispenser_advance_cursor_v1 moves pool p_pool's cursor up to p_upto
-- (NULL: the pool's highest id), unless another transaction holds its row
-- (a refill: then the cursor stays where it is, which is always safe). Every
-- code it passes that reads as available (one a concurrent claim holds
-- locked, one about to expire) gets a row in code_returns first, so none
-- is left behind. A pool's codes not yet committed have ids above every
-- committed one (imports insert under the pool's lock, held to commit).
CREATE OR REPLACE FUNCTION dispenser_advance_cursor_v1(p_pool text, p_upto bigint) RETURNS void
LANGUAGE plpgsql SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
SET enable_incremental_sort = off AS $$
DECLARE
    cur  bigint;
    upto bigint := p_upto;
BEGIN
    SELECT c.after_id INTO cur FROM stage_cursors c WHERE c.pool_id = p_pool FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF upto IS NULL THEN
        SELECT k.id INTO upto FROM codes k
        WHERE (k.pool_id, k.id) > (p_pool, 0) AND (k.pool_id, k.id) <= (p_pool, 9223372036854775807)
        ORDER BY k.pool_id DESC, k.id DESC LIMIT 1;
    END IF;
    IF upto IS NULL OR upto <= cur THEN
        RETURN;
    END IF;
    -- Ordered, so that the plan walks codes_pool_id_idx over the range (a
    -- generic plan would read the pool's whole range of another index).
    INSERT INTO code_returns (pool_id, code_id)
    SELECT p_pool, k.id FROM codes k
    WHERE (k.pool_id, k.id) > (p_pool, cur) AND (k.pool_id, k.id) <= (p_pool, upto) AND k.state = 'available'
    ORDER BY k.pool_id, k.id
    ON CONFLICT DO NOTHING;
    UPDATE stage_cursors c SET after_id = upto WHERE c.pool_id = p_pool;
END;
$$;

-- dispenser_has_available_v1: whether pool p_pool has an available code
-- that has not expired: the first one above its cursor, through
-- codes_pool_id_idx, or a returned one. The first is an ordered read that
-- stops at its first row, not an EXISTS: PL/pgSQL's generic plan for an
-- EXISTS with the pool and cursor as parameters read the pool's whole range
-- of codes_pool_code_key instead (10,000 rows per sold-out check after a
-- sale; plan_test.go checks both plan modes).
CREATE OR REPLACE FUNCTION dispenser_has_available_v1(p_pool text) RETURNS boolean
LANGUAGE plpgsql STABLE SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
SET enable_incremental_sort = off AS $$
DECLARE
    cur bigint := dispenser_cursor_v1(p_pool);
BEGIN
    PERFORM 1 FROM codes k
    WHERE (k.pool_id, k.id) > (p_pool, cur) AND (k.pool_id, k.id) <= (p_pool, 9223372036854775807)
      AND k.state = 'available' AND (k.expires_at IS NULL OR k.expires_at > now())
    ORDER BY k.pool_id, k.id
    LIMIT 1;
    IF FOUND THEN
        RETURN true;
    END IF;
    RETURN EXISTS (SELECT 1 FROM code_returns r JOIN codes k ON k.id = r.code_id
                   WHERE r.pool_id = p_pool AND k.pool_id = p_pool
                     AND k.state = 'available' AND (k.expires_at IS NULL OR k.expires_at > now()));
END;
$$;

-- dispenser_refuse_v1 records a definite refusal of a request (the caller holds
-- its lock and found neither a claim nor a live refusal). A refusal-only
-- transaction commits without waiting for its WAL flush: losing the last
-- refusals in a Postgres crash only lets a later copy be decided afresh.
CREATE OR REPLACE FUNCTION dispenser_refuse_v1(p_pool text, p_request text, p_user text, p_reason text, p_ttl interval)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO refusals (pool_id, request_id, user_id, reason, expires_at)
    VALUES (p_pool, p_request, p_user, p_reason, now() + p_ttl)
    ON CONFLICT (pool_id, request_id) DO UPDATE
    SET user_id = EXCLUDED.user_id, reason = EXCLUDED.reason,
        refused_at = EXCLUDED.refused_at, expires_at = EXCLUDED.expires_at
$$;

-- dispenser_recorded_v1 answers a request from what Postgres already holds for
-- it: its claim or its live refusal. Outcomes: 'replay' (the claim, same
-- user), 'limit' or 'exhausted' (the refusal, same user, when it binds this
-- attempt, started at p_started), 'reused' (either, another user: nothing of
-- it is returned), or NULL when nothing binds this attempt.
CREATE OR REPLACE FUNCTION dispenser_recorded_v1(p_pool text, p_request text, p_user text, p_started timestamptz,
                                   OUT outcome text, OUT code_id bigint, OUT code text,
                                   OUT expires_at timestamptz, OUT claimed_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r record;
BEGIN
    SELECT c.user_id, c.code_id, c.claimed_at, k.code, k.expires_at AS code_expires INTO r
    FROM claims c JOIN codes k ON k.id = c.code_id
    WHERE c.pool_id = p_pool AND c.request_id = p_request;
    IF FOUND THEN
        IF r.user_id <> p_user THEN
            outcome := 'reused';
        ELSE
            outcome := 'replay';
            code_id := r.code_id; code := r.code; expires_at := r.code_expires; claimed_at := r.claimed_at;
        END IF;
        RETURN;
    END IF;
    SELECT f.user_id, f.reason, f.refused_at INTO r FROM refusals f
    WHERE f.pool_id = p_pool AND f.request_id = p_request AND f.expires_at > now();
    IF FOUND THEN
        IF r.user_id <> p_user THEN
            outcome := 'reused';
        ELSIF r.refused_at >= p_started
           OR NOT EXISTS (SELECT 1 FROM imports i WHERE i.pool_id = p_pool AND i.created_at > r.refused_at)
              AND NOT EXISTS (SELECT 1 FROM pools p WHERE p.id = p_pool AND p.updated_at > r.refused_at) THEN
            -- A copy that started before the refusal answers it (it may
            -- hold a code popped before Redis forgot the request); so does
            -- any later one, unless the pool was restocked or its settings
            -- changed since: then a retry is decided afresh.
            outcome := r.reason;
        END IF;
    END IF;
END;
$$;

-- dispenser_decided_v1 takes the request's advisory lock for the rest of
-- the transaction and answers it from what Postgres holds
-- (dispenser_recorded_v1): the start of every path that decides one
-- request alone (fallback, settle).
CREATE OR REPLACE FUNCTION dispenser_decided_v1(p_pool text, p_request text, p_user text, p_started timestamptz,
                                                OUT outcome text, OUT code_id bigint, OUT code text,
                                                OUT expires_at timestamptz, OUT claimed_at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(dispenser_request_lock_v1(p_pool, p_request));
    SELECT * INTO outcome, code_id, code, expires_at, claimed_at
    FROM dispenser_recorded_v1(p_pool, p_request, p_user, p_started);
END;
$$;

-- ---------------------------------------------------------------------------
-- Version 2: holds (migration 006). A request is a claim (p_hold_ms NULL)
-- or a reservation holding its code for p_hold_ms milliseconds. Outcomes
-- add to version 1's:
--   'held'       the request is an open hold of this user (its code is
--                returned for the caller's own bookkeeping, never to be shown);
--   'expired', 'cancelled'
--                the request was a hold that ended without a claim;
--   'hold_limit' the user has the pool's holds_per_user holds open: not
--                recorded, since it ends when one of them does.
-- Rows and OUT parameters add held_until (set while a hold is open, or the
-- time an ended hold had) and reserved_at (set for a reservation's row).
-- ---------------------------------------------------------------------------

-- dispenser_release_hold_v1 ends the open hold of claims row p_claim for
-- p_reason ('cancelled' or 'expired'): the row moves to hold_releases and
-- the code goes back to available. False if the row is not an open hold.
CREATE OR REPLACE FUNCTION dispenser_release_hold_v1(p_claim bigint, p_reason text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    DELETE FROM claims c WHERE c.id = p_claim AND c.held_until IS NOT NULL
    RETURNING c.pool_id, c.request_id, c.user_id, c.code_id, c.reserved_at, c.held_until INTO r;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO hold_releases (pool_id, request_id, user_id, reason, reserved_at, held_until)
    VALUES (r.pool_id, r.request_id, r.user_id, p_reason, r.reserved_at, r.held_until);
    UPDATE codes SET state = 'available', changed_at = now() WHERE id = r.code_id AND state = 'held';
    RETURN true;
END;
$$;

-- dispenser_release_user_expired_v1 ends the user's holds in the pool whose
-- time is up (the expiry job would, within seconds), so that they neither
-- take the user's slots nor count as open.
CREATE OR REPLACE FUNCTION dispenser_release_user_expired_v1(p_pool text, p_user text) RETURNS void
LANGUAGE sql AS $$
    SELECT dispenser_release_hold_v1(c.id, 'expired') FROM claims c
    WHERE c.pool_id = p_pool AND c.user_id = p_user AND c.held_until <= now()
$$;

-- dispenser_expire_holds_v1 ends up to p_limit holds whose time is up, of
-- pool p_pool (NULL: every pool), the oldest first, skipping rows a confirm
-- or cancel holds (it decides them), and returns how many ended per pool. A
-- confirm that waited for one of these rows then finds the hold expired.
CREATE OR REPLACE FUNCTION dispenser_expire_holds_v1(p_pool text, p_limit integer)
RETURNS TABLE (pool_id text, expired bigint)
LANGUAGE sql SET enable_seqscan = off AS $$
    WITH due AS (
        SELECT c.id FROM claims c
        WHERE c.held_until <= now() AND (p_pool IS NULL OR c.pool_id = p_pool)
        ORDER BY c.held_until
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM claims c USING due
        WHERE c.id = due.id AND c.held_until <= now()
        RETURNING c.pool_id, c.request_id, c.user_id, c.code_id, c.reserved_at, c.held_until
    ), released AS (
        INSERT INTO hold_releases (pool_id, request_id, user_id, reason, reserved_at, held_until)
        SELECT g.pool_id, g.request_id, g.user_id, 'expired', g.reserved_at, g.held_until FROM gone g
    ), back AS (
        UPDATE codes k SET state = 'available', changed_at = now()
        FROM gone g WHERE k.id = g.code_id AND k.state = 'held'
    )
    SELECT g.pool_id, count(*) FROM gone g GROUP BY g.pool_id
$$;

-- dispenser_recorded_v2 is dispenser_recorded_v1 knowing holds: an open
-- hold answers 'held' (or 'expired' once its time is up, even before the
-- expiry job ends it), an ended one its reason.
CREATE OR REPLACE FUNCTION dispenser_recorded_v2(p_pool text, p_request text, p_user text, p_started timestamptz,
                                                 OUT outcome text, OUT code_id bigint, OUT code text,
                                                 OUT expires_at timestamptz, OUT claimed_at timestamptz,
                                                 OUT held_until timestamptz, OUT reserved_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r record;
BEGIN
    SELECT c.user_id, c.code_id, c.claimed_at, c.held_until AS hold, c.reserved_at AS reserved,
           k.code, k.expires_at AS code_expires INTO r
    FROM claims c JOIN codes k ON k.id = c.code_id
    WHERE c.pool_id = p_pool AND c.request_id = p_request;
    IF FOUND THEN
        IF r.user_id <> p_user THEN
            outcome := 'reused';
            RETURN;
        END IF;
        held_until := r.hold; reserved_at := r.reserved;
        IF r.hold IS NULL THEN
            outcome := 'replay';
        ELSIF r.hold > now() THEN
            outcome := 'held';
        ELSE
            outcome := 'expired';
            RETURN;
        END IF;
        code_id := r.code_id; code := r.code; expires_at := r.code_expires; claimed_at := r.claimed_at;
        RETURN;
    END IF;
    SELECT h.user_id, h.reason, h.reserved_at AS reserved, h.held_until AS hold INTO r FROM hold_releases h
    WHERE h.pool_id = p_pool AND h.request_id = p_request;
    IF FOUND THEN
        IF r.user_id <> p_user THEN
            outcome := 'reused';
        ELSE
            outcome := r.reason; held_until := r.hold; reserved_at := r.reserved;
        END IF;
        RETURN;
    END IF;
    SELECT o.outcome INTO outcome FROM dispenser_recorded_v1(p_pool, p_request, p_user, p_started) o;
END;
$$;

-- dispenser_decided_v2 is dispenser_decided_v1 over dispenser_recorded_v2.
CREATE OR REPLACE FUNCTION dispenser_decided_v2(p_pool text, p_request text, p_user text, p_started timestamptz,
                                                OUT outcome text, OUT code_id bigint, OUT code text,
                                                OUT expires_at timestamptz, OUT claimed_at timestamptz,
                                                OUT held_until timestamptz, OUT reserved_at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(dispenser_request_lock_v1(p_pool, p_request));
    SELECT * INTO outcome, code_id, code, expires_at, claimed_at, held_until, reserved_at
    FROM dispenser_recorded_v2(p_pool, p_request, p_user, p_started);
END;
$$;

-- dispenser_take_slot_v3 inserts the claim (p_hold_ms NULL) or hold of a
-- code the caller has already marked 'claimed' or 'held' in this
-- transaction, for a request whose lock it holds and that has no claim or
-- refusal. The user's expired holds end first. Where the code "goes back",
-- it goes back to available, or with p_restore_batch to staged in that
-- batch (dispenser_give_back_v1). Outcomes:
--   'claimed'    the row is in; claimed_at (and for a hold held_until,
--                reserved_at) are set;
--   'hold_limit' a hold, and the user has holds_per_user open: the code
--                goes back to available; nothing is recorded;
--   'limit'      the user holds per_user_limit rows: the code goes back to
--                available and the refusal is recorded;
--   'dup'        the request got a row earlier in this same transaction (it
--                came twice in one batch): the code goes back unless that
--                row holds it;
--   'refused'    the code already has another claim.
-- Slots are unique per (pool, user), so two concurrent claims never share
-- one: the loser of a race sees the conflict and tries the next slot.
CREATE OR REPLACE FUNCTION dispenser_take_slot_v3(p_pool text, p_request text, p_user text, p_code bigint,
                                                  p_hold_ms bigint, p_ttl interval, p_restore_batch bigint,
                                                  OUT outcome text, OUT claimed_at timestamptz,
                                                  OUT held_until timestamptz, OUT reserved_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    lim   integer;
    hlim  integer;
    slot  integer;
    n_open integer;
    taken smallint[];
BEGIN
    PERFORM dispenser_release_user_expired_v1(p_pool, p_user);
    SELECT per_user_limit, holds_per_user INTO lim, hlim FROM pools WHERE id = p_pool;
    LOOP
        SELECT coalesce(array_agg(c.user_slot), '{}'), count(*) FILTER (WHERE c.held_until IS NOT NULL)
        INTO taken, n_open
        FROM claims c WHERE c.pool_id = p_pool AND c.user_id = p_user;
        IF p_hold_ms IS NOT NULL AND n_open >= hlim THEN
            PERFORM dispenser_give_back_v1(p_code, p_restore_batch);
            outcome := 'hold_limit';
            RETURN;
        END IF;
        SELECT min(s) INTO slot FROM generate_series(1, lim) AS s WHERE s <> ALL (taken);
        IF slot IS NULL THEN
            PERFORM dispenser_give_back_v1(p_code, p_restore_batch);
            PERFORM dispenser_refuse_v1(p_pool, p_request, p_user, 'limit', p_ttl);
            outcome := 'limit';
            RETURN;
        END IF;
        INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id, reserved_at, held_until)
        VALUES (p_pool, p_request, p_user, slot, p_code,
                CASE WHEN p_hold_ms IS NOT NULL THEN now() END,
                CASE WHEN p_hold_ms IS NOT NULL THEN now() + p_hold_ms * interval '1 millisecond' END)
        ON CONFLICT DO NOTHING
        RETURNING claims.claimed_at, claims.held_until, claims.reserved_at INTO claimed_at, held_until, reserved_at;
        IF FOUND THEN
            outcome := 'claimed';
            RETURN;
        END IF;
        IF EXISTS (SELECT 1 FROM claims c WHERE c.pool_id = p_pool AND c.request_id = p_request) THEN
            IF NOT EXISTS (SELECT 1 FROM claims c WHERE c.code_id = p_code) THEN
                PERFORM dispenser_give_back_v1(p_code, p_restore_batch);
            END IF;
            outcome := 'dup';
            RETURN;
        END IF;
        IF EXISTS (SELECT 1 FROM claims c WHERE c.code_id = p_code) THEN
            outcome := 'refused';
            RETURN;
        END IF;
    END LOOP;
END;
$$;

-- dispenser_take_slot_v2 is dispenser_take_slot_v3 for a code this caller
-- popped: a refusal makes it available.
CREATE OR REPLACE FUNCTION dispenser_take_slot_v2(p_pool text, p_request text, p_user text, p_code bigint,
                                                  p_hold_ms bigint, p_ttl interval,
                                                  OUT outcome text, OUT claimed_at timestamptz,
                                                  OUT held_until timestamptz, OUT reserved_at timestamptz)
LANGUAGE sql AS $$
    SELECT t.outcome, t.claimed_at, t.held_until, t.reserved_at
    FROM dispenser_take_slot_v3(p_pool, p_request, p_user, p_code, p_hold_ms, p_ttl, NULL) t
$$;

-- dispenser_give_back_v1 undoes the take of code p_code that a request was
-- refused: back to available, or, with p_batch, back to staged in that
-- batch. A code taken from a Redis replay answer (not popped by this call)
-- may have been staged again, with its entry in a Redis list: making it
-- available would let a refill stage it a second time, listed twice.
CREATE OR REPLACE FUNCTION dispenser_give_back_v1(p_code bigint, p_batch bigint)
RETURNS void LANGUAGE sql AS $$
    UPDATE codes SET state = CASE WHEN p_batch IS NULL THEN 'available' ELSE 'staged' END::code_state,
                     stage_batch = p_batch, changed_at = now()
    WHERE id = p_code
$$;

-- dispenser_claim_staged_v3 persists a group commit: item i claims (or,
-- with p_hold_ms[i] not NULL, holds for that many milliseconds) code
-- p_code[i] (from Redis, so 'staged') for request p_request[i] of
-- user p_user[i] in pool p_pool[i], an attempt that started at p_started[i].
-- p_popped[i] says whether this item popped the code, or got it from the
-- request's Redis replay record (an earlier copy popped it). Only a popped
-- code goes back to available on a refusal; a replayed one goes back to
-- the batch it was staged in, since it may have been staged again since,
-- with an entry in a Redis list (dispenser_give_back_v1).
-- Every item gets its own outcome, and no outcome fails the batch:
--   'claimed'    committed with the given code (as a hold for a hold);
--   'replay', 'held'
--                the request already had a claim (or an open hold) of this
--                user: its code is returned, and the given code, if
--                different, goes back;
--   'reused'     the request belongs to another user: nothing is returned;
--   'limit', 'exhausted', 'expired', 'cancelled', 'hold_limit'
--                the request is refused (now, by a live refusal, or by the
--                hold it was);
--   'refused'    the code is no longer staged (claimed, void, expired or
--                reconciled): the caller claims again with another code.
-- Refusals are kept for p_ttl. Rows carry held_until and reserved_at.
CREATE OR REPLACE FUNCTION dispenser_claim_staged_v3(p_pool text[], p_request text[], p_user text[], p_code bigint[],
                                                     p_started timestamptz[], p_hold_ms bigint[], p_popped boolean[],
                                                     p_ttl interval)
RETURNS TABLE (ord integer, outcome text, code_id bigint, code text, expires_at timestamptz,
               claimed_at timestamptz, held_until timestamptz, reserved_at timestamptz)
-- Generic plans only: for small batches PL/pgSQL's plan cache otherwise
-- found a custom plan of the set-based statement cheaper than the generic
-- one and planned it again on every call, twice the CPU of the whole call
-- (round twenty-two). The setting covers the functions it calls; the other
-- batched functions of the hot paths (sold-out check, settle, fallback,
-- confirm) have it too, where it saved half to two thirds of a one-item
-- call (round twenty-three). claim/plan_test.go checks the generic plans.
LANGUAGE plpgsql SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    n     integer := coalesce(array_length(p_request, 1), 0);
    done  boolean[] := array_fill(false, ARRAY[n]);
    i     integer;
    r     record;
    taken record;
    prev  bigint;
    -- The fast path's claims, by item.
    f_ord      integer[];
    f_id       bigint[];
    f_code     text[];
    f_expires  timestamptz[];
    f_at       timestamptz[];
    f_hold     timestamptz[];
    f_reserved timestamptz[];
BEGIN
    PERFORM pg_advisory_xact_lock(l.k)
    FROM (SELECT DISTINCT dispenser_request_lock_v1(t.p, t.r) AS k
          FROM unnest(p_pool, p_request) AS t(p, r) ORDER BY 1) l;

    -- Fast path, set-based: fresh requests (no claim, no live refusal, no
    -- ended hold, once in the batch, with a code no other item names) of
    -- users without a row in the pool (so with no hold open either) take
    -- their code and slot 1 in one UPDATE and one INSERT for the whole
    -- batch. The filters only pick candidates; the constraints decide. The
    -- request locks and the probes leave one race: two requests of one user
    -- in concurrent batches both taking slot 1. The second then fails the
    -- INSERT; the block undoes the fast path's writes, and every item goes
    -- the slow way below. A plain INSERT, not ON CONFLICT DO NOTHING, which
    -- would probe every unique index of claims before each row and write a
    -- second WAL record to confirm it, for a conflict that hardly happens.
    BEGIN
        WITH input AS (
            SELECT * FROM (
                SELECT t.*, count(*) OVER (PARTITION BY t.pool_id, t.request_id) AS req_n,
                       count(*) OVER (PARTITION BY t.code_id) AS code_n
                FROM unnest(p_pool, p_request, p_user, p_code, p_started, p_hold_ms, p_popped) WITH ORDINALITY
                    AS t(pool_id, request_id, user_id, code_id, started, hold_ms, popped, ord)
            ) x WHERE x.req_n = 1 AND x.code_n = 1 AND x.popped
        ), taken AS (
            UPDATE codes k SET state = CASE WHEN i.hold_ms IS NULL THEN 'claimed' ELSE 'held' END::code_state,
                               stage_batch = NULL, changed_at = now()
            FROM input i
            WHERE k.id = i.code_id AND k.pool_id = i.pool_id AND k.stage_batch IS NOT NULL
              AND (k.expires_at IS NULL OR k.expires_at > now())
              AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.pool_id = i.pool_id AND c.request_id = i.request_id)
              AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.pool_id = i.pool_id AND c.user_id = i.user_id)
              -- A lookup per item (OFFSET 0 keeps it a subplan): as an
              -- anti join, on a refusals table never analyzed beside a
              -- pool's worth of claims, the planner hashed every live
              -- refusal (read through refusals_expiry_idx) once per batch
              -- (plan_test.go).
              AND NOT EXISTS (SELECT 1 FROM refusals rf WHERE rf.pool_id = i.pool_id AND rf.request_id = i.request_id
                                AND rf.expires_at > now() OFFSET 0)
              AND NOT EXISTS (SELECT 1 FROM hold_releases h WHERE h.pool_id = i.pool_id AND h.request_id = i.request_id)
            RETURNING i.ord, k.id, k.code, k.expires_at, i.pool_id, i.request_id, i.user_id, i.hold_ms
        ), ins AS (
            -- Every row of taken, or none (the block below): a claim's
            -- times are the transaction's now(), as claimed_at's default.
            INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id, reserved_at, held_until)
            SELECT t.pool_id, t.request_id, t.user_id, 1, t.id,
                   CASE WHEN t.hold_ms IS NOT NULL THEN now() END,
                   CASE WHEN t.hold_ms IS NOT NULL THEN now() + t.hold_ms * interval '1 millisecond' END
            FROM taken t
        )
        -- The answers come from taken alone (the UPDATE returns its input's
        -- columns): no join back to input or to the inserted rows, whose
        -- hash tables and executor nodes cost more than the batch's own
        -- rows (docs/BENCHMARKS.md, round twenty-two).
        SELECT array_agg(t.ord::integer), array_agg(t.id), array_agg(t.code), array_agg(t.expires_at),
               array_agg(now()),
               array_agg(CASE WHEN t.hold_ms IS NOT NULL THEN now() + t.hold_ms * interval '1 millisecond' END),
               array_agg(CASE WHEN t.hold_ms IS NOT NULL THEN now() END)
        INTO f_ord, f_id, f_code, f_expires, f_at, f_hold, f_reserved
        FROM taken t;
    EXCEPTION WHEN unique_violation THEN
        f_ord := NULL;
    END;
    IF f_ord IS NOT NULL THEN
        FOR i IN 1 .. cardinality(f_ord) LOOP
            done[f_ord[i]] := true;
        END LOOP;
        RETURN QUERY SELECT u.o, 'claimed'::text, u.id, u.code, u.exp, u.at, u.hold, u.res
                     FROM unnest(f_ord, f_id, f_code, f_expires, f_at, f_hold, f_reserved)
                         AS u(o, id, code, exp, at, hold, res);
    END IF;

    -- Slow path, per item, in batch order.
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN done[i];
        SELECT * INTO r FROM dispenser_recorded_v2(p_pool[i], p_request[i], p_user[i], p_started[i]);
        IF r.outcome IS NOT NULL THEN
            -- Only a code this item popped is its to give back: a replayed
            -- one is the popping copy's (or, if that copy died, reconcile's).
            IF r.code_id IS DISTINCT FROM p_code[i] AND p_popped[i] THEN
                UPDATE codes SET state = 'available', stage_batch = NULL, changed_at = now()
                WHERE id = p_code[i] AND stage_batch IS NOT NULL;
            END IF;
            RETURN QUERY SELECT i, r.outcome, r.code_id, r.code, r.expires_at, r.claimed_at, r.held_until, r.reserved_at;
            CONTINUE;
        END IF;

        prev := NULL;
        IF NOT p_popped[i] THEN
            SELECT k.stage_batch INTO prev FROM codes k WHERE k.id = p_code[i] AND k.pool_id = p_pool[i] FOR UPDATE;
        END IF;
        UPDATE codes k SET state = CASE WHEN p_hold_ms[i] IS NULL THEN 'claimed' ELSE 'held' END::code_state,
                           stage_batch = NULL, changed_at = now()
        WHERE k.id = p_code[i] AND k.pool_id = p_pool[i] AND k.stage_batch IS NOT NULL
          AND (k.expires_at IS NULL OR k.expires_at > now())
        RETURNING k.id, k.code, k.expires_at INTO taken;
        IF NOT FOUND THEN
            RETURN QUERY SELECT i, 'refused'::text, p_code[i], NULL::text, NULL::timestamptz, NULL::timestamptz,
                                NULL::timestamptz, NULL::timestamptz;
            CONTINUE;
        END IF;
        SELECT * INTO r FROM dispenser_take_slot_v3(p_pool[i], p_request[i], p_user[i], taken.id, p_hold_ms[i], p_ttl, prev);
        IF r.outcome = 'claimed' THEN
            RETURN QUERY SELECT i, 'claimed'::text, taken.id, taken.code, taken.expires_at, r.claimed_at,
                                r.held_until, r.reserved_at;
        ELSE
            RETURN QUERY SELECT i, r.outcome, taken.id, NULL::text, NULL::timestamptz, NULL::timestamptz,
                                NULL::timestamptz, NULL::timestamptz;
        END IF;
    END LOOP;
END;
$$;

-- dispenser_claim_staged_v2 is dispenser_claim_staged_v3 with every code
-- popped by its item (replicas of the previous version).
CREATE OR REPLACE FUNCTION dispenser_claim_staged_v2(p_pool text[], p_request text[], p_user text[], p_code bigint[],
                                                     p_started timestamptz[], p_hold_ms bigint[], p_ttl interval)
RETURNS TABLE (ord integer, outcome text, code_id bigint, code text, expires_at timestamptz,
               claimed_at timestamptz, held_until timestamptz, reserved_at timestamptz)
LANGUAGE sql AS $$
    SELECT * FROM dispenser_claim_staged_v3(p_pool, p_request, p_user, p_code, p_started, p_hold_ms,
                                            array_fill(true, ARRAY[coalesce(array_length(p_request, 1), 0)]), p_ttl)
$$;

-- dispenser_claim_fallback_v3 does what dispenser_claim_fallback_v2 did
-- (its outcomes are described with v2, below, which now calls v3), in
-- fewer statements. One probe tells whether Postgres holds anything for the
-- request; only then does dispenser_recorded_v2 read it. One query reads
-- the pool's limits with the user's slots and holds; the user's expired
-- holds are released only when there is one. The claim row goes in with
-- the first free slot. The old body ran about fifteen statements per claim
-- (the user's rows and the pool were read twice, in nested calls). A race
-- for the slot, which the request lock does not cover, takes the general
-- path (dispenser_take_slot_v3).
CREATE OR REPLACE FUNCTION dispenser_claim_fallback_v3(p_pool text, p_request text, p_user text, p_after bigint,
                                                       p_started timestamptz, p_hold_ms bigint, p_ttl interval,
                                                       p_redis_down boolean,
                                                       OUT outcome text, OUT code_id bigint, OUT code text,
                                                       OUT expires_at timestamptz, OUT claimed_at timestamptz,
                                                       OUT held_until timestamptz, OUT reserved_at timestamptz)
-- Sorts and bitmap scans off: on a table never analyzed, a pool's range of
-- codes_pool_code_key read whole (through a bitmap or not) and sorted looked
-- as cheap as the pick's ordered walk of codes_pool_id_idx (plan_test.go).
LANGUAGE plpgsql SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
SET enable_incremental_sort = off AS $$
DECLARE
    lim     integer;
    hlim    integer;
    taken   smallint[];
    n_open  integer;
    expired boolean;
    slot    integer;
    r       record;
    bound   bigint := p_after;
    cur     bigint;
    avail   boolean;
    staged  boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(dispenser_request_lock_v1(p_pool, p_request));
    IF EXISTS (SELECT 1 FROM claims c WHERE c.pool_id = p_pool AND c.request_id = p_request)
       OR EXISTS (SELECT 1 FROM hold_releases h WHERE h.pool_id = p_pool AND h.request_id = p_request)
       OR EXISTS (SELECT 1 FROM refusals f WHERE f.pool_id = p_pool AND f.request_id = p_request
                  AND f.expires_at > now()) THEN
        SELECT * INTO outcome, code_id, code, expires_at, claimed_at, held_until, reserved_at
        FROM dispenser_recorded_v2(p_pool, p_request, p_user, p_started);
        IF outcome IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;

    SELECT p.per_user_limit, p.holds_per_user,
           coalesce(array_agg(c.user_slot) FILTER (WHERE c.id IS NOT NULL), '{}'),
           count(c.id) FILTER (WHERE c.held_until IS NOT NULL),
           coalesce(bool_or(c.held_until <= now()), false)
    INTO lim, hlim, taken, n_open, expired
    FROM pools p LEFT JOIN claims c ON c.pool_id = p.id AND c.user_id = p_user
    WHERE p.id = p_pool
    GROUP BY p.per_user_limit, p.holds_per_user;
    IF expired THEN
        PERFORM dispenser_release_user_expired_v1(p_pool, p_user);
        SELECT coalesce(array_agg(c.user_slot), '{}'), count(*) FILTER (WHERE c.held_until IS NOT NULL)
        INTO taken, n_open
        FROM claims c WHERE c.pool_id = p_pool AND c.user_id = p_user;
    END IF;
    IF cardinality(taken) >= lim THEN
        PERFORM dispenser_refuse_v1(p_pool, p_request, p_user, 'limit', p_ttl);
        PERFORM set_config('synchronous_commit', 'off', true);
        outcome := 'limit';
        RETURN;
    END IF;
    IF p_hold_ms IS NOT NULL AND n_open >= hlim THEN
        outcome := 'hold_limit';
        RETURN;
    END IF;

    cur := dispenser_cursor_v1(p_pool);
    bound := greatest(bound, cur);
    LOOP
        WITH picked AS (
            -- The pool's range of codes_pool_id_idx past the hint (or its
            -- cursor), as two row comparisons: a plain "id > bound" lets
            -- the planner take the primary key and re-read every claimed
            -- row, and beside "pool_id = p_pool" the index scan starts at
            -- the pool's first entry and steps over every taken code up to
            -- the bound (plan_test.go checks both).
            SELECT k.id FROM codes k
            WHERE k.state = 'available'
              AND (k.pool_id, k.id) > (p_pool, bound) AND (k.pool_id, k.id) <= (p_pool, 9223372036854775807)
              AND (k.expires_at IS NULL OR k.expires_at > now())
            ORDER BY k.pool_id, k.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE codes k SET state = CASE WHEN p_hold_ms IS NULL THEN 'claimed' ELSE 'held' END::code_state,
                           changed_at = now()
        FROM picked WHERE k.id = picked.id
        RETURNING k.id, k.code, k.expires_at INTO r;
        IF FOUND THEN
            IF r.id > cur + 1 AND (bound = cur OR r.id > cur + 1024) THEN
                -- The walk from the cursor stepped over taken codes, or the
                -- cursor lags a thousand codes behind the fallback's own
                -- claims (Redis away, no refill moving it): the next walk
                -- from it, a sold-out check or a refill once Redis is back,
                -- need not read them.
                PERFORM dispenser_advance_cursor_v1(p_pool, r.id - 1);
            END IF;
            EXIT;
        END IF;
        IF bound = cur THEN
            -- Nothing above the cursor: the pool's returned codes.
            WITH picked AS (
                SELECT k.id FROM code_returns rt JOIN codes k ON k.id = rt.code_id
                WHERE rt.pool_id = p_pool AND k.pool_id = p_pool AND k.state = 'available'
                  AND (k.expires_at IS NULL OR k.expires_at > now())
                ORDER BY rt.code_id
                LIMIT 1
                FOR UPDATE OF k SKIP LOCKED
            )
            UPDATE codes k SET state = CASE WHEN p_hold_ms IS NULL THEN 'claimed' ELSE 'held' END::code_state,
                               changed_at = now()
            FROM picked WHERE k.id = picked.id
            RETURNING k.id, k.code, k.expires_at INTO r;
            IF FOUND THEN
                DELETE FROM code_returns rt WHERE rt.pool_id = p_pool AND rt.code_id = r.id;
                EXIT;
            END IF;
            -- Nothing to take: the cursor goes to the pool's end, so that
            -- the checks below, and the calls after a sell-out, do not walk
            -- the taken codes again.
            PERFORM dispenser_advance_cursor_v1(p_pool, NULL);
            -- Both in one statement, so one snapshot: a code given back
            -- between two (staged, then available) would be seen by
            -- neither, and the pool called sold out with a code left.
            SELECT dispenser_has_available_v1(p_pool), dispenser_has_staged_v1(p_pool) INTO avail, staged;
            IF avail THEN
                outcome := 'busy';
                RETURN;
            END IF;
            IF staged THEN
                IF p_redis_down THEN
                    -- The pool's last codes sit in a Redis that cannot be
                    -- reached: not sold out. Nothing is decided; the caller
                    -- answers Unavailable and a retry finds them once Redis
                    -- (or reconcile) gives them back.
                    outcome := 'unreachable';
                    RETURN;
                END IF;
                PERFORM dispenser_refuse_v1(p_pool, p_request, p_user, 'exhausted', p_ttl);
                PERFORM set_config('synchronous_commit', 'off', true);
            END IF;
            outcome := 'exhausted';
            RETURN;
        END IF;
        bound := cur;
    END LOOP;

    SELECT min(s) INTO slot FROM generate_series(1, lim) AS s WHERE s <> ALL (taken);
    INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id, reserved_at, held_until)
    VALUES (p_pool, p_request, p_user, slot, r.id,
            CASE WHEN p_hold_ms IS NOT NULL THEN now() END,
            CASE WHEN p_hold_ms IS NOT NULL THEN now() + p_hold_ms * interval '1 millisecond' END)
    ON CONFLICT DO NOTHING
    RETURNING claims.claimed_at, claims.held_until, claims.reserved_at INTO claimed_at, held_until, reserved_at;
    IF FOUND THEN
        outcome := 'claimed';
    ELSE
        SELECT t.outcome, t.claimed_at, t.held_until, t.reserved_at INTO outcome, claimed_at, held_until, reserved_at
        FROM dispenser_take_slot_v3(p_pool, p_request, p_user, r.id, p_hold_ms, p_ttl, NULL) t;
    END IF;
    IF outcome = 'claimed' THEN
        code_id := r.id; code := r.code; expires_at := r.expires_at;
    ELSIF outcome = 'limit' THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
END;
$$;

-- dispenser_pick_available_v1 locks and returns (in id order) up to p_n of
-- pool p_pool's available, unexpired codes with ids above p_after, skipping
-- those other transactions hold locked: the fallback's pick for a batch.
-- The same ordered walk of codes_pool_id_idx as dispenser_claim_fallback_v3's
-- pick, as two row comparisons, and with the same settings (plan_test.go).
CREATE OR REPLACE FUNCTION dispenser_pick_available_v1(p_pool text, p_after bigint, p_n integer) RETURNS bigint[]
LANGUAGE plpgsql SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
SET enable_incremental_sort = off AS $$
DECLARE
    ids bigint[];
BEGIN
    SELECT coalesce(array_agg(s.id ORDER BY s.id), '{}') INTO ids FROM (
        SELECT k.id FROM codes k
        WHERE k.state = 'available'
          AND (k.pool_id, k.id) > (p_pool, p_after) AND (k.pool_id, k.id) <= (p_pool, 9223372036854775807)
          AND (k.expires_at IS NULL OR k.expires_at > now())
        ORDER BY k.pool_id, k.id
        LIMIT p_n
        FOR UPDATE SKIP LOCKED
    ) s;
    RETURN ids;
END;
$$;

-- dispenser_claim_fallback_many_v1 decides a batch of fallback claims,
-- each item as dispenser_claim_fallback_v3 would decide it alone, in the
-- caller's one transaction, and returns one row per item (ord is its
-- index): concurrent fallback claims share a round trip and a commit. The
-- caller sorts the items by pool, user and request. An item's scan starts
-- past p_after[i] (the caller's hint: the last code it claimed in the pool)
-- or the pool's cursor, whichever is higher. A refusal turns
-- synchronous_commit off for its transaction (see dispenser_refuse_v1); a
-- batch in which an item claimed commits as the session's setting says,
-- durably by default, before the caller hands out any answer.
CREATE OR REPLACE FUNCTION dispenser_claim_fallback_many_v1(p_pool text[], p_request text[], p_user text[],
                                                            p_after bigint[], p_started timestamptz[],
                                                            p_hold_ms bigint[], p_ttl interval, p_redis_down boolean[])
RETURNS TABLE (ord integer, outcome text, code_id bigint, code text, expires_at timestamptz,
               claimed_at timestamptz, held_until timestamptz, reserved_at timestamptz)
-- Generic plans only, as dispenser_claim_staged_v3 (round twenty-three).
LANGUAGE plpgsql SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    n         integer := coalesce(array_length(p_request, 1), 0);
    done      boolean[] := array_fill(false, ARRAY[n]);
    sync      text := current_setting('synchronous_commit');
    wrote     boolean := false;
    last_pool text;
    last_code bigint;
    after     bigint;
    r         record;
    fresh     record;
    cur       bigint;
    bound     bigint;
    ids       bigint[];
    -- The fast path's picks: items and the codes they take.
    w_ord      integer[] := '{}';
    w_id       bigint[] := '{}';
    -- The fast path's claims, by item.
    f_ord      integer[];
    f_id       bigint[];
    f_code     text[];
    f_expires  timestamptz[];
    f_at       timestamptz[];
    f_hold     timestamptz[];
    f_reserved timestamptz[];
BEGIN
    -- Every request's lock first, in one order (as the group commit takes
    -- them), so that no two batches wait on each other's.
    PERFORM pg_advisory_xact_lock(l.k)
    FROM (SELECT DISTINCT dispenser_request_lock_v1(t.p, t.r) AS k
          FROM unnest(p_pool, p_request) AS t(p, r) ORDER BY 1) l;

    -- Fast path, set-based: fresh requests (no claim, no live refusal, no
    -- ended hold, once in the batch) of users without a row in the pool
    -- (so at none of its limits, with no hold open or expired) and once in
    -- the batch take the pool's next available codes, picked for all of
    -- them in one ordered walk, and slot 1, in one UPDATE and one INSERT for
    -- the whole batch. Per-item, that is about nine statements a claim. The
    -- filters only pick candidates; the constraints decide. Two requests of
    -- one user in concurrent batches can both take slot 1: the second fails
    -- the INSERT, the block undoes the fast path's writes (and its locks),
    -- and every item goes the per-item way below. Items the walk found no
    -- code for go that way too: it looks at the pool's returned codes and
    -- decides a sell-out.
    BEGIN
        FOR fresh IN
            SELECT i.pool_id, array_agg(i.ord::integer ORDER BY i.ord) AS ords, max(i.after) AS after
            FROM (
                SELECT t.*, count(*) OVER (PARTITION BY t.pool_id, t.request_id) AS req_n,
                       count(*) OVER (PARTITION BY t.pool_id, t.user_id) AS user_n
                FROM unnest(p_pool, p_request, p_user, p_after) WITH ORDINALITY AS t(pool_id, request_id, user_id, after, ord)
            ) i
            WHERE i.req_n = 1 AND i.user_n = 1
              AND EXISTS (SELECT 1 FROM pools p WHERE p.id = i.pool_id)
              AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.pool_id = i.pool_id AND c.request_id = i.request_id)
              AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.pool_id = i.pool_id AND c.user_id = i.user_id)
              -- A lookup per item, as in dispenser_claim_staged_v3 (OFFSET
              -- 0 keeps it a subplan, not a hash over every live refusal).
              AND NOT EXISTS (SELECT 1 FROM refusals rf WHERE rf.pool_id = i.pool_id AND rf.request_id = i.request_id
                                AND rf.expires_at > now() OFFSET 0)
              AND NOT EXISTS (SELECT 1 FROM hold_releases h WHERE h.pool_id = i.pool_id AND h.request_id = i.request_id)
            GROUP BY i.pool_id
        LOOP
            cur := dispenser_cursor_v1(fresh.pool_id);
            bound := greatest(fresh.after, cur);
            ids := dispenser_pick_available_v1(fresh.pool_id, bound, cardinality(fresh.ords));
            IF cardinality(ids) < cardinality(fresh.ords) AND bound > cur THEN
                -- Fewer past the hint than asked for: the rest from the
                -- cursor (the codes just locked are this transaction's, so
                -- the walk returns them again, first among the others).
                ids := dispenser_pick_available_v1(fresh.pool_id, cur, cardinality(fresh.ords));
                bound := cur;
            END IF;
            CONTINUE WHEN cardinality(ids) = 0;
            IF ids[1] > cur + 1 AND (bound = cur OR ids[1] > cur + 1024) THEN
                -- As dispenser_claim_fallback_v3 does: the cursor catches
                -- up with the walk.
                PERFORM dispenser_advance_cursor_v1(fresh.pool_id, ids[1] - 1);
            END IF;
            w_ord := w_ord || fresh.ords[1:cardinality(ids)];
            w_id := w_id || ids;
        END LOOP;

        IF cardinality(w_id) > 0 THEN
            WITH pick AS (
                SELECT u.o, u.id, p_pool[u.o] AS pool_id, p_request[u.o] AS request_id, p_user[u.o] AS user_id,
                       p_hold_ms[u.o] AS hold_ms
                FROM unnest(w_ord, w_id) AS u(o, id)
            ), taken AS (
                UPDATE codes k SET state = CASE WHEN pk.hold_ms IS NULL THEN 'claimed' ELSE 'held' END::code_state,
                                   changed_at = now()
                FROM pick pk
                WHERE k.id = pk.id AND k.pool_id = pk.pool_id AND k.state = 'available'
                RETURNING k.id, k.code, k.expires_at
            ), ins AS (
                INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id, reserved_at, held_until)
                SELECT pk.pool_id, pk.request_id, pk.user_id, 1, t.id,
                       CASE WHEN pk.hold_ms IS NOT NULL THEN now() END,
                       CASE WHEN pk.hold_ms IS NOT NULL THEN now() + pk.hold_ms * interval '1 millisecond' END
                FROM pick pk JOIN taken t ON t.id = pk.id
                RETURNING claims.code_id, claims.claimed_at, claims.held_until, claims.reserved_at
            )
            SELECT array_agg(pk.o), array_agg(t.id), array_agg(t.code), array_agg(t.expires_at),
                   array_agg(ins.claimed_at), array_agg(ins.held_until), array_agg(ins.reserved_at)
            INTO f_ord, f_id, f_code, f_expires, f_at, f_hold, f_reserved
            FROM pick pk JOIN taken t ON t.id = pk.id JOIN ins ON ins.code_id = t.id;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        f_ord := NULL;
    END;
    IF f_ord IS NOT NULL THEN
        wrote := true;
        FOR i IN 1 .. cardinality(f_ord) LOOP
            done[f_ord[i]] := true;
        END LOOP;
        RETURN QUERY SELECT u.o, 'claimed'::text, u.id, u.code, u.exp, u.at, u.hold, u.res
                     FROM unnest(f_ord, f_id, f_code, f_expires, f_at, f_hold, f_reserved)
                         AS u(o, id, code, exp, at, hold, res);
    END IF;

    -- The rest, per item, in batch order.
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN done[i];
        after := p_after[i];
        IF p_pool[i] = last_pool AND last_code > after THEN
            after := last_code;
        END IF;
        SELECT * INTO r FROM dispenser_claim_fallback_v3(p_pool[i], p_request[i], p_user[i], after, p_started[i],
                                                         p_hold_ms[i], p_ttl, p_redis_down[i]);
        IF r.outcome = 'claimed' THEN
            wrote := true;
            last_pool := p_pool[i];
            last_code := r.code_id;
        END IF;
        RETURN QUERY SELECT i, r.outcome, r.code_id, r.code, r.expires_at, r.claimed_at, r.held_until, r.reserved_at;
    END LOOP;
    IF wrote THEN
        PERFORM set_config('synchronous_commit', sync, true);
    END IF;
END;
$$;

-- dispenser_settle_many_v1 answers a batch of requests that Redis refused
-- as dispenser_settle_v2 answers each, in the caller's one transaction, one
-- row per item (ord is its index, then dispenser_settle_v2's columns): the
-- requests Redis refused concurrently share a round trip and a commit
-- instead of paying one each. The common case, a user at the limit asking
-- again with a new request id, is decided for the whole batch in one
-- statement: fresh requests (no claim, no ended hold, no live refusal, once
-- in the batch) of users who hold the pool's limit and have no ended hold to
-- release are refused for the limit and the refusals recorded; every other
-- item goes through dispenser_settle_v2, in batch order. The caller sorts
-- the items by pool, user and request, so concurrent batches take request
-- locks in one order. What a batch writes needs no flush before its answers:
-- refusals (as dispenser_refuse_v1) and the release of ended holds (done
-- again by the next call or the expiry job if a crash loses it).
CREATE OR REPLACE FUNCTION dispenser_settle_many_v1(p_pool text[], p_request text[], p_user text[], p_limit boolean[],
                                                    p_started timestamptz[], p_ttl interval)
RETURNS TABLE (ord integer, outcome text, code_id bigint, code text, expires_at timestamptz,
               claimed_at timestamptz, held_until timestamptz, reserved_at timestamptz, held integer)
-- Generic plans only, as dispenser_claim_staged_v3 (round twenty-three).
LANGUAGE plpgsql SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    n      integer := coalesce(array_length(p_request, 1), 0);
    done   boolean[] := array_fill(false, ARRAY[n]);
    r      record;
    f_ord  integer[];
    f_held integer[];
BEGIN
    PERFORM pg_advisory_xact_lock(l.k)
    FROM (SELECT DISTINCT dispenser_request_lock_v1(t.p, t.r) AS k
          FROM unnest(p_pool, p_request) AS t(p, r) ORDER BY 1) l;

    WITH input AS (
        SELECT * FROM (
            SELECT t.*, count(*) OVER (PARTITION BY t.pool_id, t.request_id) AS req_n
            FROM unnest(p_pool, p_request, p_user, p_limit) WITH ORDINALITY AS t(pool_id, request_id, user_id, lim, ord)
        ) x WHERE x.req_n = 1 AND x.lim
    ), refused AS (
        SELECT i.pool_id, i.request_id, i.user_id, i.ord, u.n
        FROM input i
        JOIN pools p ON p.id = i.pool_id
        CROSS JOIN LATERAL (SELECT count(*)::integer AS n, coalesce(bool_or(c.held_until <= now()), false) AS ended
                            FROM claims c WHERE c.pool_id = i.pool_id AND c.user_id = i.user_id) u
        WHERE u.n >= p.per_user_limit AND NOT u.ended
          -- One EXISTS over a UNION ALL, never a hashed subplan reading a
          -- whole table (see dispenser_sold_out_v1).
          AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.pool_id = i.pool_id AND c.request_id = i.request_id
                          UNION ALL
                          SELECT 1 FROM hold_releases h WHERE h.pool_id = i.pool_id AND h.request_id = i.request_id
                          UNION ALL
                          SELECT 1 FROM refusals f WHERE f.pool_id = i.pool_id AND f.request_id = i.request_id
                            AND f.expires_at > now())
    ), recorded AS (
        INSERT INTO refusals (pool_id, request_id, user_id, reason, expires_at)
        SELECT x.pool_id, x.request_id, x.user_id, 'limit', now() + p_ttl FROM refused x
        ON CONFLICT (pool_id, request_id) DO UPDATE
        SET user_id = EXCLUDED.user_id, reason = EXCLUDED.reason,
            refused_at = EXCLUDED.refused_at, expires_at = EXCLUDED.expires_at
    )
    SELECT array_agg(x.ord::integer), array_agg(x.n) INTO f_ord, f_held FROM refused x;
    IF f_ord IS NOT NULL THEN
        FOR i IN 1 .. cardinality(f_ord) LOOP
            done[f_ord[i]] := true;
        END LOOP;
        RETURN QUERY SELECT u.o, 'limit'::text, NULL::bigint, NULL::text, NULL::timestamptz, NULL::timestamptz,
                            NULL::timestamptz, NULL::timestamptz, u.h
                     FROM unnest(f_ord, f_held) AS u(o, h);
    END IF;

    FOR i IN 1 .. n LOOP
        CONTINUE WHEN done[i];
        SELECT * INTO r FROM dispenser_settle_v2(p_pool[i], p_request[i], p_user[i], p_limit[i], p_started[i], p_ttl);
        RETURN QUERY SELECT i, r.outcome, r.code_id, r.code, r.expires_at, r.claimed_at, r.held_until, r.reserved_at,
                            r.held;
    END LOOP;
    PERFORM set_config('synchronous_commit', 'off', true);
END;
$$;

-- dispenser_sold_out_v1 answers, for each request (ord) that found nothing
-- staged in Redis, whether its pool is sold out to it, as
-- dispenser_claim_fallback_v3 would find:
--   - the pool holds no code a claim could take: none available and
--     unexpired, none staged (every code is held, claimed or void);
--   - Postgres holds nothing for the request: no claim, no ended hold, no
--     live refusal (so dispenser_recorded_v2 would find nothing);
--   - the user could take a code if there were one: below the pool's limit,
--     below its hold limit for a hold (p_hold), no ended hold of its own
--     (the fallback would release it, giving a code back).
-- The fallback answers such a request 'exhausted' and records nothing, so
-- the caller may answer it so without the fallback's transaction; every
-- other request goes the fallback's way. Read only, and one statement for a
-- batch: a sold-out pool's claims cost a few index probes each instead of a
-- refill attempt, a read of Redis's list and a transaction. The pool's two
-- existence checks run once per pool and batch.
CREATE OR REPLACE FUNCTION dispenser_sold_out_v1(p_pool text[], p_request text[], p_user text[],
                                                 p_hold boolean[])
RETURNS TABLE (ord integer, sold_out boolean)
-- Generic plans only, as dispenser_claim_staged_v3 (round twenty-three).
LANGUAGE plpgsql STABLE SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN QUERY
    WITH items AS (
        SELECT t.pool_id, t.request_id, t.user_id, t.hold, t.ord
        FROM unnest(p_pool, p_request, p_user, p_hold) WITH ORDINALITY AS t(pool_id, request_id, user_id, hold, ord)
    ), empty AS MATERIALIZED (
        SELECT p.id, p.per_user_limit, p.holds_per_user
        FROM pools p
        WHERE p.id IN (SELECT DISTINCT i.pool_id FROM items i)
          AND NOT dispenser_has_available_v1(p.id)
          AND NOT dispenser_has_staged_v1(p.id)
    )
    SELECT i.ord::integer,
           CASE WHEN e.id IS NULL THEN false
                ELSE (SELECT count(*) < e.per_user_limit
                             AND (NOT i.hold OR count(*) FILTER (WHERE c.held_until IS NOT NULL) < e.holds_per_user)
                             AND NOT coalesce(bool_or(c.held_until <= now()), false)
                      FROM claims c WHERE c.pool_id = i.pool_id AND c.user_id = i.user_id)
                     -- One EXISTS over a UNION ALL: Postgres cannot turn it
                     -- into a hashed subplan, which reads a whole table (a
                     -- plan made while hold_releases was empty would read
                     -- all of it for every batch once it has grown).
                     AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.pool_id = i.pool_id AND c.request_id = i.request_id
                                     UNION ALL
                                     SELECT 1 FROM hold_releases h WHERE h.pool_id = i.pool_id AND h.request_id = i.request_id
                                     UNION ALL
                                     SELECT 1 FROM refusals f WHERE f.pool_id = i.pool_id AND f.request_id = i.request_id
                                       AND f.expires_at > now())
           END
    FROM items i LEFT JOIN empty e ON e.id = i.pool_id
    ORDER BY i.ord;
END;
$$;

-- dispenser_claim_fallback_v2 claims (or, with p_hold_ms not NULL, holds)
-- one available code straight from Postgres, in the caller's single
-- transaction, for when Redis cannot serve, for an attempt that started at
-- p_started. Outcomes: 'claimed', 'replay', 'held', 'reused', 'expired',
-- 'cancelled', 'hold_limit', 'limit' and 'exhausted' (no available code),
-- the last two recorded as refusals for p_ttl (an exhausted pool with
-- nothing staged records nothing); 'busy': the only available codes are
-- locked by others (a refill staging them, claims taking them), nothing is
-- decided and the caller tries again; 'unreachable': with p_redis_down (the
-- fallback serves because Redis failed, not because its list was empty),
-- the pool's only codes left are staged, in Redis, not sold: nothing is
-- decided. p_after is a hint: codes with smaller ids were claimed recently,
-- so the scan starts past them and skips the dead index entries they left;
-- if nothing is found past it, the scan starts again from the beginning.
CREATE OR REPLACE FUNCTION dispenser_claim_fallback_v2(p_pool text, p_request text, p_user text, p_after bigint,
                                                       p_started timestamptz, p_hold_ms bigint, p_ttl interval,
                                                       p_redis_down boolean,
                                                       OUT outcome text, OUT code_id bigint, OUT code text,
                                                       OUT expires_at timestamptz, OUT claimed_at timestamptz,
                                                       OUT held_until timestamptz, OUT reserved_at timestamptz)
LANGUAGE sql AS $$
    -- Now the same work as v3 (replicas of the previous version call v2).
    SELECT * FROM dispenser_claim_fallback_v3(p_pool, p_request, p_user, p_after, p_started, p_hold_ms, p_ttl, p_redis_down)
$$;

-- dispenser_settle_v2 answers a request that Redis refused, before the
-- refusal reaches the caller: Postgres decides. Outcomes: what
-- dispenser_recorded_v2 finds ('replay', 'held', 'reused', 'limit',
-- 'exhausted', 'expired', 'cancelled'); else, if p_limit and the user holds
-- the pool's limit, 'limit' (recorded); else 'open': nothing is decided (for
-- a limit, Redis's guard was stale). held is the user's row count (claims
-- and open holds); the user's expired holds end first.
CREATE OR REPLACE FUNCTION dispenser_settle_v2(p_pool text, p_request text, p_user text, p_limit boolean,
                                               p_started timestamptz, p_ttl interval,
                                               OUT outcome text, OUT code_id bigint, OUT code text,
                                               OUT expires_at timestamptz, OUT claimed_at timestamptz,
                                               OUT held_until timestamptz, OUT reserved_at timestamptz,
                                               OUT held integer)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    lim integer;
BEGIN
    SELECT * INTO outcome, code_id, code, expires_at, claimed_at, held_until, reserved_at
    FROM dispenser_decided_v2(p_pool, p_request, p_user, p_started);
    PERFORM dispenser_release_user_expired_v1(p_pool, p_user);
    SELECT count(*) INTO held FROM claims c WHERE c.pool_id = p_pool AND c.user_id = p_user;
    IF outcome IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT per_user_limit INTO lim FROM pools WHERE id = p_pool;
    IF NOT p_limit OR held < lim THEN
        outcome := 'open';
        RETURN;
    END IF;
    PERFORM dispenser_refuse_v1(p_pool, p_request, p_user, 'limit', p_ttl);
    PERFORM set_config('synchronous_commit', 'off', true);
    outcome := 'limit';
END;
$$;

-- dispenser_hold_row_v1 takes the request's advisory lock and its claims
-- row's lock, for a confirm or a cancel, and answers what they share: with
-- outcome set ('not_found', 'reused', an ended hold's reason, or
-- 'not_reservation'), the call is decided; with outcome NULL, the row is an
-- open or confirmed reservation of this user (p_user '' is any user), in
-- claim_id, code_id, claimed_at, held_until (NULL once confirmed). user_id,
-- reserved_at and held_until are filled wherever known.
CREATE OR REPLACE FUNCTION dispenser_hold_row_v1(p_pool text, p_request text, p_user text,
                                                 OUT outcome text, OUT claim_id bigint, OUT code_id bigint,
                                                 OUT claimed_at timestamptz, OUT held_until timestamptz,
                                                 OUT reserved_at timestamptz, OUT user_id text)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM pg_advisory_xact_lock(dispenser_request_lock_v1(p_pool, p_request));
    SELECT c.id, c.user_id AS owner, c.code_id AS code, c.claimed_at AS at, c.held_until AS hold,
           c.reserved_at AS reserved INTO r
    FROM claims c WHERE c.pool_id = p_pool AND c.request_id = p_request
    FOR UPDATE;
    IF NOT FOUND THEN
        SELECT h.user_id AS owner, h.reason, h.reserved_at AS reserved, h.held_until AS hold INTO r
        FROM hold_releases h WHERE h.pool_id = p_pool AND h.request_id = p_request;
        IF NOT FOUND THEN
            outcome := 'not_found';
        ELSIF p_user <> '' AND r.owner <> p_user THEN
            outcome := 'reused';
        ELSE
            outcome := r.reason; user_id := r.owner; held_until := r.hold; reserved_at := r.reserved;
        END IF;
        RETURN;
    END IF;
    IF p_user <> '' AND r.owner <> p_user THEN
        outcome := 'reused';
        RETURN;
    END IF;
    user_id := r.owner; reserved_at := r.reserved; held_until := r.hold;
    claim_id := r.id; code_id := r.code; claimed_at := r.at;
    IF r.reserved IS NULL THEN
        outcome := 'not_reservation';
    END IF;
END;
$$;

-- dispenser_confirm_v1 turns the open hold of (pool, request) into a claim.
-- With p_user not empty, a request of another user answers 'reused'.
-- Outcomes: 'confirmed' (the code is returned); 'replay' (confirmed before:
-- the same code); 'expired' (its time is up: it ends now if it had not,
-- and no code is returned), 'cancelled'; 'not_reservation' (the request
-- is a ClaimCode's claim); 'not_found'; 'reused'. user_id is the owner.
CREATE OR REPLACE FUNCTION dispenser_confirm_v1(p_pool text, p_request text, p_user text,
                                                OUT outcome text, OUT code_id bigint, OUT code text,
                                                OUT expires_at timestamptz, OUT claimed_at timestamptz,
                                                OUT held_until timestamptz, OUT reserved_at timestamptz,
                                                OUT user_id text)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM dispenser_hold_row_v1(p_pool, p_request, p_user);
    outcome := r.outcome; user_id := r.user_id; reserved_at := r.reserved_at; held_until := r.held_until;
    IF outcome IS NOT NULL THEN
        RETURN;
    END IF;
    IF r.held_until IS NULL THEN
        outcome := 'replay';
        claimed_at := r.claimed_at;
    ELSIF r.held_until <= now() THEN
        PERFORM dispenser_release_hold_v1(r.claim_id, 'expired');
        outcome := 'expired';
        RETURN;
    ELSE
        UPDATE claims c SET held_until = NULL, claimed_at = now() WHERE c.id = r.claim_id
        RETURNING c.claimed_at INTO claimed_at;
        UPDATE codes k SET state = 'claimed', changed_at = now() WHERE k.id = r.code_id;
        outcome := 'confirmed';
    END IF;
    SELECT k.id, k.code, k.expires_at INTO code_id, code, expires_at FROM codes k WHERE k.id = r.code_id;
END;
$$;

-- dispenser_cancel_v1 ends the open hold of (pool, request) at once; its
-- code goes back to available. Outcomes: 'cancelled' (now or before),
-- 'expired' (its time was up: it ended as expired), 'confirmed' (it is a
-- claim now: nothing changes), 'not_reservation', 'not_found', 'reused'.
CREATE OR REPLACE FUNCTION dispenser_cancel_v1(p_pool text, p_request text, p_user text,
                                               OUT outcome text, OUT held_until timestamptz,
                                               OUT reserved_at timestamptz, OUT user_id text)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM dispenser_hold_row_v1(p_pool, p_request, p_user);
    outcome := r.outcome; user_id := r.user_id; reserved_at := r.reserved_at; held_until := r.held_until;
    IF outcome IS NOT NULL THEN
        RETURN;
    ELSIF r.held_until IS NULL THEN
        outcome := 'confirmed';
    ELSIF r.held_until <= now() THEN
        PERFORM dispenser_release_hold_v1(r.claim_id, 'expired');
        outcome := 'expired';
    ELSE
        PERFORM dispenser_release_hold_v1(r.claim_id, 'cancelled');
        outcome := 'cancelled';
    END IF;
END;
$$;

-- dispenser_confirm_many_v1 confirms a batch in one transaction: item i is
-- (p_pool[i], p_request[i], p_user[i]), answered by one row with
-- dispenser_confirm_v1's outcome and columns (held_until is not returned
-- for a hold confirmed here). Open holds named once in the batch are
-- confirmed set-based; everything else goes through dispenser_confirm_v1.
CREATE OR REPLACE FUNCTION dispenser_confirm_many_v1(p_pool text[], p_request text[], p_user text[])
RETURNS TABLE (ord integer, outcome text, code_id bigint, code text, expires_at timestamptz,
               claimed_at timestamptz, held_until timestamptz, reserved_at timestamptz, user_id text)
-- Generic plans only, as dispenser_claim_staged_v3 (round twenty-three).
LANGUAGE plpgsql SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    n    integer := coalesce(array_length(p_request, 1), 0);
    done boolean[] := array_fill(false, ARRAY[n]);
    f    record;
    i    integer;
BEGIN
    PERFORM pg_advisory_xact_lock(l.k)
    FROM (SELECT DISTINCT dispenser_request_lock_v1(t.p, t.r) AS k
          FROM unnest(p_pool, p_request) AS t(p, r) ORDER BY 1) l;
    FOR f IN
        WITH input AS (
            SELECT * FROM (
                SELECT t.*, count(*) OVER (PARTITION BY t.pool_id, t.request_id) AS req_n
                FROM unnest(p_pool, p_request, p_user) WITH ORDINALITY AS t(pool_id, request_id, user_id, ord)
            ) x WHERE x.req_n = 1
        ), confirmed AS (
            UPDATE claims c SET held_until = NULL, claimed_at = now()
            FROM input i
            WHERE c.pool_id = i.pool_id AND c.request_id = i.request_id AND c.held_until > now()
              AND (i.user_id = '' OR c.user_id = i.user_id)
            RETURNING i.ord, c.code_id AS code, c.claimed_at AS at, c.user_id AS owner, c.reserved_at AS reserved
        ), taken AS (
            UPDATE codes k SET state = 'claimed', changed_at = now()
            FROM confirmed c WHERE k.id = c.code
            RETURNING k.id, k.code, k.expires_at
        )
        SELECT c.ord::integer AS ord, t.id, t.code, t.expires_at, c.at, c.owner, c.reserved
        FROM confirmed c JOIN taken t ON t.id = c.code
    LOOP
        done[f.ord] := true;
        RETURN QUERY SELECT f.ord, 'confirmed'::text, f.id, f.code, f.expires_at, f.at, NULL::timestamptz,
                            f.reserved, f.owner;
    END LOOP;
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN done[i];
        RETURN QUERY SELECT i, c.* FROM dispenser_confirm_v1(p_pool[i], p_request[i], p_user[i]) c;
    END LOOP;
END;
$$;

-- ---------------------------------------------------------------------------
-- Version 1, kept for replicas of the previous version during a rolling
-- deploy: each is version 2 without holds, its answers cut to version 1's
-- columns. A request that is a hold answers 'held', 'expired' or 'cancelled',
-- outcomes version 1 replicas do not know: they fail that call (Internal)
-- rather than show a held code.
-- ---------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION dispenser_take_slot_v1(p_pool text, p_request text, p_user text, p_code bigint, p_ttl interval,
                                    OUT outcome text, OUT claimed_at timestamptz)
LANGUAGE sql AS $$
    SELECT t.outcome, t.claimed_at FROM dispenser_take_slot_v2(p_pool, p_request, p_user, p_code, NULL, p_ttl) t
$$;

CREATE OR REPLACE FUNCTION dispenser_claim_staged_v1(p_pool text[], p_request text[], p_user text[], p_code bigint[],
                                       p_started timestamptz[], p_ttl interval)
RETURNS TABLE (ord integer, outcome text, code_id bigint, code text, expires_at timestamptz,
               claimed_at timestamptz)
LANGUAGE sql AS $$
    SELECT c.ord, c.outcome, c.code_id, c.code, c.expires_at, c.claimed_at
    FROM dispenser_claim_staged_v2(p_pool, p_request, p_user, p_code, p_started,
                                   array_fill(NULL::bigint, ARRAY[coalesce(array_length(p_request, 1), 0)]), p_ttl) c
$$;

CREATE OR REPLACE FUNCTION dispenser_claim_fallback_v1(p_pool text, p_request text, p_user text, p_after bigint,
                                         p_started timestamptz, p_ttl interval,
                                         OUT outcome text, OUT code_id bigint, OUT code text,
                                         OUT expires_at timestamptz, OUT claimed_at timestamptz)
LANGUAGE sql AS $$
    SELECT f.outcome, f.code_id, f.code, f.expires_at, f.claimed_at
    FROM dispenser_claim_fallback_v2(p_pool, p_request, p_user, p_after, p_started, NULL, p_ttl, false) f
$$;

CREATE OR REPLACE FUNCTION dispenser_settle_v1(p_pool text, p_request text, p_user text, p_limit boolean,
                                 p_started timestamptz, p_ttl interval,
                                 OUT outcome text, OUT code_id bigint, OUT code text,
                                 OUT expires_at timestamptz, OUT claimed_at timestamptz, OUT held integer)
LANGUAGE sql AS $$
    SELECT t.outcome, t.code_id, t.code, t.expires_at, t.claimed_at, t.held
    FROM dispenser_settle_v2(p_pool, p_request, p_user, p_limit, p_started, p_ttl) t
$$;
