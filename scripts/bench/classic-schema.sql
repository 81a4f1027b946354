-- The classic claim's tables (scripts/bench/classic.sql): codes with a
-- partial index over the available ones, claims with the constraints that
-- make it correct (one claim per code, one per request), and the same
-- aggressive per-table autovacuum as dispenser's codes table.
DROP TABLE IF EXISTS classic_claims, classic_codes;
CREATE TABLE classic_codes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code       text COLLATE "C" NOT NULL UNIQUE,
    state      text NOT NULL DEFAULT 'available',
    claimed_at timestamptz
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02,
        autovacuum_vacuum_cost_delay = 0);
CREATE INDEX classic_codes_available ON classic_codes (id) WHERE state = 'available';
CREATE TABLE classic_claims (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id text NOT NULL UNIQUE,
    user_id    text NOT NULL,
    code_id    bigint NOT NULL UNIQUE REFERENCES classic_codes (id),
    claimed_at timestamptz NOT NULL DEFAULT now()
);
