-- A refill batch of up to $2 codes of pool $1, for Redis shard $3.
INSERT INTO stage_batches (pool_id, size, shard) VALUES ($1, $2, $3) RETURNING id
