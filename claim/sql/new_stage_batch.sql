INSERT INTO stage_batches (pool_id, size) VALUES ($1, $2) RETURNING id
