-- Dispenser schema. Postgres is the source of truth: the constraints here, not
-- only the Go code, keep promises 1 (no double issue), 2 (nothing lost),
-- 4 (idempotent) and 5 (per-user limit) of docs/DESIGN.md.

-- Pool ids go into Redis keys as the hash tag, so braces are impossible.
CREATE TABLE pools (
    id                text PRIMARY KEY
                      CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    display_name      text NOT NULL DEFAULT '' CHECK (length(display_name) <= 200),
    paused            boolean NOT NULL DEFAULT false,
    claim_starts_at   timestamptz,
    claim_ends_at     timestamptz,
    per_user_limit    integer NOT NULL DEFAULT 1 CHECK (per_user_limit BETWEEN 1 AND 1000),
    refill_low_water  integer NOT NULL CHECK (refill_low_water BETWEEN 0 AND 1000000),
    refill_batch_size integer NOT NULL CHECK (refill_batch_size BETWEEN 1 AND 100000),
    webhook_url       text NOT NULL DEFAULT '',
    webhook_secret    text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (claim_starts_at IS NULL OR claim_ends_at IS NULL OR claim_starts_at < claim_ends_at)
);

-- One row per import that landed; an import that failed leaves no row.
CREATE TABLE imports (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool_id            text NOT NULL REFERENCES pools (id),
    source_name        text NOT NULL DEFAULT '',
    format             text NOT NULL CHECK (format IN ('lines', 'csv')),
    strict             boolean NOT NULL,
    lines              bigint NOT NULL CHECK (lines >= 0),
    inserted           bigint NOT NULL CHECK (inserted >= 0),
    duplicates_in_file bigint NOT NULL CHECK (duplicates_in_file >= 0),
    duplicates_in_pool bigint NOT NULL CHECK (duplicates_in_pool >= 0),
    invalid            bigint NOT NULL CHECK (invalid >= 0),
    bytes              bigint NOT NULL CHECK (bytes >= 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (lines = inserted + duplicates_in_file + duplicates_in_pool + invalid)
);
CREATE INDEX imports_pool_idx ON imports (pool_id);

CREATE TYPE code_state AS ENUM ('available', 'staged', 'claimed', 'void');

-- Every imported code is in exactly one state (promise 2). Rows are never
-- deleted. No foreign keys on this table: pools and imports are never deleted,
-- and a per-row RI check would halve bulk-import speed.
CREATE TABLE codes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool_id     text NOT NULL,
    -- Codes are opaque bytes: "C" collation compares them with memcmp, the
    -- fastest order for the unique index and for sorting imports.
    code        text COLLATE "C" NOT NULL CHECK (length(code) BETWEEN 4 AND 128),
    state       code_state NOT NULL DEFAULT 'available',
    expires_at  timestamptz,
    import_id   bigint NOT NULL,
    -- The refill batch that staged the code in Redis, while state = 'staged'.
    stage_batch bigint,
    void_reason text,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT codes_pool_code_key UNIQUE (pool_id, code),
    CHECK ((state = 'staged') = (stage_batch IS NOT NULL)),
    CHECK ((state = 'void') = (void_reason IS NOT NULL))
) WITH (
    -- Claims turn rows over fast; vacuum early so SKIP LOCKED scans stay short.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- The allocator's index: available codes of a pool in id order. Partial, so
-- claimed and void rows never sit in the way of a SKIP LOCKED scan.
CREATE INDEX codes_available_idx ON codes (pool_id, id) WHERE state = 'available';
-- Reconciliation finds staged codes by their refill batch.
CREATE INDEX codes_staged_idx ON codes (pool_id, stage_batch) WHERE state = 'staged';
-- Expiry sweeps look only at codes that can still be handed out.
CREATE INDEX codes_expiring_idx ON codes (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('available', 'staged');

-- One claim per code (code_id unique), one claim per (pool, request_id), and at
-- most per_user_limit claims per user: each claim takes a numbered slot,
-- slots are unique per (pool, user) and the claim path only takes slots up to
-- the pool's limit.
CREATE TABLE claims (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key to pools: every claim would take a KEY SHARE lock on
    -- its pool's row, one hot row for every concurrent claim. Pools are never
    -- deleted.
    pool_id    text NOT NULL,
    request_id text NOT NULL CHECK (length(request_id) BETWEEN 1 AND 128),
    user_id    text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    user_slot  smallint NOT NULL CHECK (user_slot BETWEEN 1 AND 1000),
    code_id    bigint NOT NULL REFERENCES codes (id),
    claimed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT claims_code_key UNIQUE (code_id),
    CONSTRAINT claims_request_key UNIQUE (pool_id, request_id),
    CONSTRAINT claims_user_slot_key UNIQUE (pool_id, user_id, user_slot)
);
CREATE INDEX claims_pool_time_idx ON claims (pool_id, claimed_at, id);

CREATE TYPE prize_state AS ENUM ('pending', 'ready', 'assigned', 'delivered', 'failed', 'cancelled');

-- Wins delivered later. The prize id is the request_id of its claim, so the
-- claims table's constraints keep a prize to one code even across runs.
CREATE TABLE prizes (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool_id         text NOT NULL REFERENCES pools (id),
    user_id         text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    external_id     text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 128),
    metadata        jsonb NOT NULL DEFAULT '{}',
    details         jsonb,
    state           prize_state NOT NULL DEFAULT 'pending',
    claim_id        bigint UNIQUE REFERENCES claims (id),
    park_reason     text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    ready_at        timestamptz,
    assigned_at     timestamptz,
    delivered_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT prizes_external_key UNIQUE (pool_id, external_id),
    CHECK ((state IN ('assigned', 'delivered')) <= (claim_id IS NOT NULL))
);
CREATE INDEX prizes_ready_idx ON prizes (pool_id, id) WHERE state = 'ready';
CREATE INDEX prizes_pool_state_idx ON prizes (pool_id, state, id);

-- One delivery per prize, with a stable id the receiver deduplicates on.
CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    prize_id        bigint NOT NULL UNIQUE REFERENCES prizes (id),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz,
    last_error      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
