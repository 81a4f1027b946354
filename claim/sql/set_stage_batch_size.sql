UPDATE stage_batches SET size = $2 WHERE id = $1
