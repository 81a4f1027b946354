-- Run in the refill's transaction, before stage_batch.sql: pool $1's cursor
-- row, made at its first refill (migrations/013_hot_refills.sql made those
-- of the pools it found). No write when it exists.
INSERT INTO stage_cursors (pool_id) VALUES ($1) ON CONFLICT DO NOTHING
