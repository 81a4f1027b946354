-- The claim decision, in Postgres: whatever Redis says, the claim functions
-- (migrations/functions.sql) and the claims table's constraints decide.

-- Refill batches staged into Redis. Reconciliation compares them with the
-- batch markers Redis still holds.
CREATE TABLE stage_batches (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool_id   text NOT NULL REFERENCES pools (id),
    size      integer NOT NULL CHECK (size > 0),
    staged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stage_batches_pool_idx ON stage_batches (pool_id, id);

-- This migration also created the first claim functions (dispenser_take_slot,
-- dispenser_claim_staged, dispenser_staged_answer, dispenser_claim_fallback).
-- 005 replaced them, and migrations/functions.sql now holds their only
-- bodies (as _v1); no replica of this version or later calls these, so a
-- new database no longer gets them.
