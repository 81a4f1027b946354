-- Holds (ReserveCode, ConfirmReservation, CancelReservation).
--
-- A hold is a claims row whose held_until is set: it takes one of the user's
-- slots (so holds count toward per_user_limit), owns its request id, and its
-- code is in state 'held', given to nobody else. Confirming clears
-- held_until (the row becomes a claim, the code 'claimed'). Cancelling or
-- expiring deletes the row, records the end in hold_releases (so the
-- request id keeps one answer) and puts the code back to 'available': a
-- held code was never shown to anyone, so it is safe to give again.
--
-- Every read of claims that reveals a code reads only rows whose held_until
-- is NULL.

-- Not used in this transaction (Postgres forbids it), only by the claim
-- functions, applied after.
ALTER TYPE code_state ADD VALUE IF NOT EXISTS 'held' AFTER 'staged';

ALTER TABLE pools
    -- A reservation that names no hold time gets hold_default_seconds.
    ADD COLUMN hold_default_seconds integer NOT NULL DEFAULT 600
        CHECK (hold_default_seconds BETWEEN 1 AND 86400),
    -- No reservation holds its code longer.
    ADD COLUMN hold_max_seconds integer NOT NULL DEFAULT 3600
        CHECK (hold_max_seconds BETWEEN 1 AND 86400),
    -- How many holds one user may have open at once (they also count
    -- toward per_user_limit).
    ADD COLUMN holds_per_user integer NOT NULL DEFAULT 1
        CHECK (holds_per_user BETWEEN 1 AND 1000),
    ADD CONSTRAINT pools_hold_default_max CHECK (hold_default_seconds <= hold_max_seconds);

ALTER TABLE claims
    -- Set for a claim made by ReserveCode: when the hold began.
    ADD COLUMN reserved_at timestamptz,
    -- Set while the row is an open hold: when it expires.
    ADD COLUMN held_until timestamptz,
    ADD CONSTRAINT claims_hold_reserved CHECK (held_until IS NULL OR reserved_at IS NOT NULL);

-- The hold expiry job's index: open holds by expiry. Plain claims never
-- enter it.
CREATE INDEX claims_held_idx ON claims (held_until) WHERE held_until IS NOT NULL;

-- Holds that ended without a claim. The request id stays owned by its user
-- and keeps its answer (RESERVATION_CANCELLED, RESERVATION_EXPIRED).
CREATE TABLE hold_releases (
    pool_id     text NOT NULL,
    request_id  text NOT NULL,
    user_id     text NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('cancelled', 'expired')),
    reserved_at timestamptz NOT NULL,
    held_until  timestamptz NOT NULL,
    released_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pool_id, request_id)
);
