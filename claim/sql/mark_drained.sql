-- Mark drained the live batches of pool $1 with no staged code left. A
-- batch never gets one back (migrations/012_hot_claims.sql), so the mark is
-- final; a batch whose refill has not committed is not seen at all.
UPDATE stage_batches b SET drained_at = now()
WHERE b.pool_id = $1 AND b.drained_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM codes k WHERE k.id BETWEEN b.first_id AND b.last_id AND k.stage_batch = b.id)
