-- API keys. Only a SHA-256 of each key's secret is stored: the secret is
-- 256 random bits, so a fast hash is enough, and a stolen table reveals no
-- key. Keys are revoked, never deleted, so the audit trail stays.
CREATE TYPE key_role AS ENUM ('claimer', 'admin', 'auditor');

CREATE TABLE api_keys (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{12}$'),
    name        text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    role        key_role NOT NULL,
    -- A claimer may be limited to these pools; NULL means every pool.
    pools       text[],
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
    -- Requests per second allowed to this key, and the burst; 0 takes the
    -- server's default.
    rate        double precision NOT NULL DEFAULT 0 CHECK (rate >= 0),
    burst       integer NOT NULL DEFAULT 0 CHECK (burst >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
