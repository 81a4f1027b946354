-- Session-local staging for one import. Temporary tables are not WAL-logged
-- and vanish with the connection, so a cut import leaves nothing behind.
CREATE TEMP TABLE import_rows (
    line       bigint NOT NULL,
    code       text COLLATE "C" NOT NULL,
    expires_at timestamptz
)
